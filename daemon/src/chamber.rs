//! Thermal chambers: one task per chamber polls it, shares its state with the channels inside
//! it, sets its set point for the one test that owns it, and declares it unsafe on an alarm, on
//! communication lost past its timeout, or on an air temperature beyond its limits.
//!
//! The channels act on that state themselves (a stepped channel switches its output off and
//! faults its test; a native channel stops its test through the cycler), so the chamber task
//! never waits on a channel and a slow channel never delays the chamber's verdict.

use crate::retry::Waiting;
use cyclerd_drivers::Clock;
use cyclerd_drivers::chamber::Chamber;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};

/// Readings kept for looking up the air temperature of past records (native channels download
/// records after the fact): at one reading per second, about a day.
const HISTORY: usize = 100_000;

/// What a chamber task needs to know.
#[derive(Debug, Clone)]
pub struct ChamberSpec {
    pub name: String,
    /// Clock seconds between readings.
    pub poll_interval_s: f64,
    /// Wall time without a good reading after which the chamber counts as unsafe.
    pub comm_timeout: Duration,
    /// The air must stay within these, degC; outside them the chamber counts as unsafe.
    pub temperature_min_c: f64,
    pub temperature_max_c: f64,
    /// Where the set point goes when its owner's test ends; `None`: it stays.
    pub idle_set_point_c: Option<f64>,
}

/// The chamber as its channels see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChamberState {
    /// Air temperature of the last good reading, degC.
    pub temperature_c: Option<f64>,
    /// Set point in force at the last good reading, degC.
    pub set_point_c: Option<f64>,
    /// The test that owns the set point.
    pub owner: Option<String>,
    /// Why the chamber is not safe for the cells inside it, while it is not.
    pub fault: Option<String>,
    /// Why the chamber has given no reading since the daemon started, until it does: no test
    /// starts in it meanwhile, and an interrupted one waits (for at most its communication
    /// timeout, after which the chamber counts as unsafe).
    pub unread: Option<String>,
}

/// Requests to a chamber task.
#[derive(Debug)]
enum ChamberCmd {
    /// Makes `test_id` the owner of the set point, unless another test owns it.
    Claim {
        test_id: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The owner sets the set point (and starts regulating).
    SetPoint { test_id: String, temperature_c: f64 },
    /// The owner's test ended.
    Release { test_id: String },
}

/// A channel's handle on the chamber it sits in; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChamberLink {
    name: Arc<str>,
    state: watch::Receiver<ChamberState>,
    cmds: mpsc::UnboundedSender<ChamberCmd>,
    history: Arc<Mutex<VecDeque<(f64, f64)>>>,
}

impl ChamberLink {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chamber's latest state.
    pub fn state(&self) -> watch::Ref<'_, ChamberState> {
        self.state.borrow()
    }

    /// Receives every change of the chamber's state.
    pub fn watch(&self) -> watch::Receiver<ChamberState> {
        self.state.clone()
    }

    /// Takes the set point for `test_id`; refused, naming the owner, while another test has it.
    pub async fn claim(&self, test_id: &str) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.cmds
            .send(ChamberCmd::Claim {
                test_id: test_id.into(),
                reply,
            })
            .map_err(|_| format!("chamber {} is not running", self.name))?;
        answer
            .await
            .map_err(|_| format!("chamber {} is not running", self.name))?
    }

    /// Sets the chamber to `temperature_c` for the owning test `test_id`.
    pub fn set_point(&self, test_id: &str, temperature_c: f64) {
        let _ = self.cmds.send(ChamberCmd::SetPoint {
            test_id: test_id.into(),
            temperature_c,
        });
    }

    /// Gives the set point back after `test_id` ended (a no-op for a test that did not own it).
    pub fn release(&self, test_id: &str) {
        let _ = self.cmds.send(ChamberCmd::Release {
            test_id: test_id.into(),
        });
    }

    /// The chamber's recent readings, locked once for looking up many records' air
    /// temperatures (a page of backfilled records) rather than once per record.
    pub fn history(&self) -> AirHistory<'_> {
        AirHistory(self.history.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The chamber's readings as `(unix time, air temperature)`, oldest first, while locked.
pub struct AirHistory<'a>(std::sync::MutexGuard<'a, VecDeque<(f64, f64)>>);

impl AirHistory<'_> {
    /// The air temperature at unix time `unix_s`: the reading closest before it, if one is at
    /// most `max_age_s` older.
    pub fn at(&self, unix_s: f64, max_age_s: f64) -> Option<f64> {
        let i = self.0.partition_point(|&(t, _)| t <= unix_s);
        let &(t, temperature) = self.0.get(i.checked_sub(1)?)?;
        (unix_s - t <= max_age_s).then_some(temperature)
    }
}

/// The task that owns one chamber.
pub struct ChamberRunner<C> {
    spec: ChamberSpec,
    chamber: C,
    clock: Clock,
    state: watch::Sender<ChamberState>,
    cmds: mpsc::UnboundedReceiver<ChamberCmd>,
    history: Arc<Mutex<VecDeque<(f64, f64)>>>,
    /// The set point the chamber has not confirmed yet, and whether to start the chamber with
    /// it (not an idle set point for a chamber in alarm).
    pending_set_point: Option<(f64, bool)>,
    /// When the daemon started asking for readings: the last good one counts from here.
    since: Instant,
}

/// A chamber's task before the chamber answered: its channels' link exists, and the chamber is
/// unread (no test starts in it) until it answers; unsafe once it has not answered for its
/// communication timeout, as a chamber that stops answering mid-test is.
pub struct Unconnected {
    spec: ChamberSpec,
    clock: Clock,
    state: watch::Sender<ChamberState>,
    cmds: mpsc::UnboundedReceiver<ChamberCmd>,
    history: Arc<Mutex<VecDeque<(f64, f64)>>>,
    /// When the daemon started asking: communication counts as lost from here.
    since: Instant,
    /// Fires when the chamber has not answered for its communication timeout.
    unsafe_at: Pin<Box<Sleep>>,
    /// A test in the chamber ended meanwhile: the idle set point goes to the chamber once it
    /// answers.
    released: bool,
}

impl Unconnected {
    /// The task's side and the link its channels use.
    pub fn new(spec: ChamberSpec, clock: Clock) -> (Unconnected, ChamberLink) {
        let (state, state_rx) = watch::channel(ChamberState {
            unread: Some(format!("chamber {} has given no reading yet", spec.name)),
            ..ChamberState::default()
        });
        let (cmd_tx, cmds) = mpsc::unbounded_channel();
        let history = Arc::new(Mutex::new(VecDeque::new()));
        let link = ChamberLink {
            name: spec.name.as_str().into(),
            state: state_rx,
            cmds: cmd_tx,
            history: Arc::clone(&history),
        };
        let since = Instant::now();
        let task = Unconnected {
            unsafe_at: Box::pin(tokio::time::sleep_until(since + spec.comm_timeout)),
            spec,
            clock,
            state,
            cmds,
            history,
            since,
            released: false,
        };
        (task, link)
    }

    /// The runner, now that `chamber` answers.
    pub fn connected<C: Chamber>(self, chamber: C) -> ChamberRunner<C> {
        // Set, not started: whether the chamber is in alarm is not known yet.
        let pending_set_point = self
            .spec
            .idle_set_point_c
            .filter(|_| self.released)
            .map(|t| (t, false));
        ChamberRunner {
            spec: self.spec,
            chamber,
            clock: self.clock,
            state: self.state,
            cmds: self.cmds,
            history: self.history,
            pending_set_point,
            since: self.since,
        }
    }
}

impl Waiting for Unconnected {
    fn offline(&mut self, why: &str) {
        self.state.send_modify(|s| s.unread = Some(why.into()));
    }

    fn online(&mut self) {
        let answers = format!("chamber {} answers; no reading yet", self.spec.name);
        self.state.send_modify(|s| s.unread = Some(answers));
    }

    fn refuse(&mut self, cx: &mut Context<'_>, why: &str) -> Poll<()> {
        if self.unsafe_at.as_mut().poll(cx).is_ready() && self.state.borrow().fault.is_none() {
            let fault = format!(
                "lost communication with chamber {} for more than {} ms: {why}",
                self.spec.name,
                self.spec.comm_timeout.as_millis()
            );
            self.state.send_modify(|s| s.fault = Some(fault));
        }
        loop {
            match self.cmds.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Ready(Some(ChamberCmd::Claim { reply, .. })) => {
                    let _ = reply.send(Err(why.into()));
                }
                // No claim succeeds while it is offline, so nobody owns the set point.
                Poll::Ready(Some(ChamberCmd::SetPoint { .. })) => {}
                Poll::Ready(Some(ChamberCmd::Release { .. })) => self.released = true,
            }
        }
    }
}

impl<C: Chamber> ChamberRunner<C> {
    /// Polls the chamber and serves its channels until `shutdown`, then serves what they asked
    /// before it (the ends of their tests). The chamber keeps its set point when the daemon
    /// stops (the cells inside stay at their test temperature) unless a test that ended gives
    /// it back to its idle set point.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = self.clock.pacer(self.spec.poll_interval_s);
        let mut last_good = self.since;
        let mut link_error: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(cmd) = self.cmds.recv() => self.command(cmd).await,
                _ = ticks.tick() => {
                    if let Some((t, start)) = self.pending_set_point
                        && self.apply_set_point(t, start).await.is_ok()
                    {
                        self.pending_set_point = None;
                    }
                    match self.chamber.read().await {
                        Ok(r) => {
                            last_good = Instant::now();
                            if link_error.take().is_some() {
                                tracing::info!(chamber = %self.spec.name, "communication restored");
                            }
                            self.remember(r.temperature_c);
                            let fault = self.verdict(&r);
                            self.state.send_if_modified(|s| {
                                let new = ChamberState {
                                    temperature_c: Some(r.temperature_c),
                                    set_point_c: Some(r.set_point_c),
                                    owner: s.owner.clone(),
                                    fault,
                                    unread: None,
                                };
                                let changed = *s != new;
                                *s = new;
                                changed
                            });
                        }
                        Err(e) => {
                            if link_error.is_none() {
                                tracing::warn!(chamber = %self.spec.name, "read failed: {e}");
                            }
                            link_error = Some(e.to_string());
                            if last_good.elapsed() >= self.spec.comm_timeout {
                                let fault = format!(
                                    "lost communication with chamber {} for more than {} ms: {e}",
                                    self.spec.name,
                                    self.spec.comm_timeout.as_millis()
                                );
                                self.state.send_if_modified(|s| {
                                    let changed = s.fault.as_ref() != Some(&fault);
                                    s.fault = Some(fault.clone());
                                    changed
                                });
                            }
                            if e.is_link_lost()
                                && let Err(e) = self.chamber.reconnect().await
                            {
                                tracing::debug!(chamber = %self.spec.name, "reconnect failed: {e}");
                            }
                        }
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while let Ok(cmd) = self.cmds.try_recv() {
            self.command(cmd).await;
        }
    }

    /// Why the chamber is unsafe after reading `r`, if it is.
    fn verdict(&self, r: &cyclerd_drivers::chamber::ChamberReading) -> Option<String> {
        let name = &self.spec.name;
        if !r.alarms.is_empty() {
            return Some(format!(
                "chamber {name} reports an alarm: {}",
                r.alarms.join("; ")
            ));
        }
        let (lo, hi) = (self.spec.temperature_min_c, self.spec.temperature_max_c);
        if !r.temperature_c.is_finite() || r.temperature_c < lo || r.temperature_c > hi {
            return Some(format!(
                "chamber {name} air at {:.1} degC, outside its limits {lo} to {hi} degC",
                r.temperature_c
            ));
        }
        None
    }

    fn remember(&self, temperature_c: f64) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back((self.clock.unix_time_s(), temperature_c));
    }

    async fn command(&mut self, cmd: ChamberCmd) {
        match cmd {
            ChamberCmd::Claim { test_id, reply } => {
                let owner = self.state.borrow().owner.clone();
                let answer = match owner {
                    Some(other) if other != test_id => Err(format!(
                        "chamber {} is owned by test {other}, which sets its temperature; a \
                         test with chamber steps can start in it when that test has ended",
                        self.spec.name
                    )),
                    _ => {
                        self.state.send_modify(|s| s.owner = Some(test_id.clone()));
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            ChamberCmd::SetPoint {
                test_id,
                temperature_c,
            } => {
                if self.state.borrow().owner.as_deref() != Some(test_id.as_str()) {
                    tracing::warn!(chamber = %self.spec.name, %test_id, "set point from a test that does not own the chamber ignored");
                    return;
                }
                tracing::info!(chamber = %self.spec.name, %test_id, "set point {temperature_c} degC");
                // Retried on every poll until the chamber takes it.
                self.pending_set_point = self
                    .apply_set_point(temperature_c, true)
                    .await
                    .is_err()
                    .then_some((temperature_c, true));
            }
            ChamberCmd::Release { test_id } => {
                // Free after this: its owner ended, or nobody owned it (an interrupted owner
                // that was not resumed has not claimed it again).
                let free = {
                    let owner = self.state.borrow().owner.clone();
                    match owner {
                        Some(owner) if owner == test_id => {
                            self.state.send_modify(|s| s.owner = None);
                            true
                        }
                        Some(_) => false,
                        None => true,
                    }
                };
                if !free {
                    return;
                }
                // The ended test's set point is no longer wanted.
                self.pending_set_point = None;
                if let Some(idle) = self.spec.idle_set_point_c {
                    tracing::info!(chamber = %self.spec.name, %test_id, "test ended: back to the idle set point {idle} degC");
                    // A chamber in alarm gets the set point but is not started again.
                    let start = self.state.borrow().fault.is_none();
                    self.pending_set_point = self
                        .apply_set_point(idle, start)
                        .await
                        .is_err()
                        .then_some((idle, start));
                }
            }
        }
    }

    /// Sets `temperature_c`, and starts the chamber (regulating to it) when `start`.
    async fn apply_set_point(&mut self, temperature_c: f64, start: bool) -> Result<(), ()> {
        let result = async {
            self.chamber.set_temperature(temperature_c).await?;
            if start {
                self.chamber.start().await?;
            }
            Ok::<(), cyclerd_drivers::DriverError>(())
        }
        .await;
        result.map_err(|e| {
            tracing::warn!(chamber = %self.spec.name, "cannot set {temperature_c} degC yet: {e}");
        })
    }
}
