//! Following a cycler: one status call per poll for all its channels, then each followed
//! test's new records downloaded from the index after the last one stored; the cycler's states
//! become events and the test's end.

use super::segments::Decision;
use super::{
    AMBIENT_MAX_AGE_S, CyclerRunner, PAGE_RECORDS, PAGES_PER_POLL, START_GRACE_POLLS,
    cycler_test_name, state_name, step_text,
};
use crate::channel::Ending;
use crate::channel::journal::Sample;
use cyclerd_drivers::DriverError;
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, ChannelStatus, Cycler, Record};
use cyclerd_protocols::supervise::Reading;

impl<C: Cycler> CyclerRunner<C> {
    /// One poll: every channel's status in one call, then each followed test's new records.
    pub(super) async fn poll(&mut self) {
        let addrs: Vec<ChannelAddr> = self.slots.iter().map(|s| s.addr).collect();
        let statuses = match self.cycler.status(&addrs).await {
            Ok(s) if s.len() == addrs.len() => s,
            Ok(s) => {
                let e = DriverError::BadReply {
                    during: "reading channel status",
                    message: format!("{} statuses for {} channels", s.len(), addrs.len()),
                };
                return self.link_trouble(e).await;
            }
            Err(e) => return self.link_trouble(e).await,
        };
        if let Some((since, _)) = self.link_lost.take() {
            let gap = self.shared.clock.unix_time_s() - since;
            tracing::info!(device = %self.device, "communication restored after {gap:.1} s");
            for k in 0..self.slots.len() {
                if let Some(run) = &self.slots[k].run {
                    let t = run.now(&self.shared.clock);
                    self.event(
                        k,
                        t,
                        "link",
                        format!(
                            "communication restored after {gap:.1} s; downloading what the \
                             cycler logged meanwhile"
                        ),
                    );
                    self.slots[k].live.send_modify(|s| s.reason.clear());
                }
            }
        }
        let room = *self.shared.outbox.space().borrow();
        if room == self.deferred {
            self.deferred = !room;
            let message = if room {
                "the outbox has room again: downloading the records the cycler kept"
            } else {
                "downloads wait: the outbox is full (store.max_bytes or disk); the cycler keeps \
                 logging and nothing is lost"
            };
            tracing::warn!(device = %self.device, "{message}");
            let now = self.shared.clock.unix_time_s();
            for k in 0..self.slots.len() {
                let Some(run) = &self.slots[k].run else {
                    continue;
                };
                let t = now - run.journal.start_unix_s();
                self.send_batch(k);
                self.event(k, t, "state", message.into());
                let reason = if room {
                    ""
                } else {
                    "outbox full: downloads wait"
                };
                self.slots[k].live.send_modify(|s| s.reason = reason.into());
            }
        }
        for (k, status) in statuses.into_iter().enumerate() {
            if let Err(e) = self.follow(k, status).await {
                return self.link_trouble(e).await;
            }
        }
    }

    /// Downloads what is new on channel `k` and acts on its state.
    async fn follow(&mut self, k: usize, status: ChannelStatus) -> Result<(), DriverError> {
        let slot = &self.slots[k];
        let Some(run) = &slot.run else {
            // A channel someone else started shows as busy; cyclerd's own ended tests keep
            // their outcome on display until the next start.
            let foreign = status.test.as_ref().filter(|t| !t.starts_with("cyclerd-"));
            let (state, reason) = match (&status.state, foreign) {
                (ChannelState::Idle, _) => ("idle".to_string(), String::new()),
                (s, Some(test)) => (
                    "busy".to_string(),
                    format!(
                        "{} on the cycler: {test}, not started by cyclerd",
                        state_name(s)
                    ),
                ),
                _ => return Ok(()),
            };
            slot.live.send_if_modified(|s| {
                let ended_here = matches!(s.state.as_str(), "finished" | "stopped" | "faulted");
                if (state == "idle" && ended_here) || (s.state == state && s.reason == reason) {
                    return false;
                }
                s.state = state;
                s.reason = reason;
                true
            });
            return Ok(());
        };
        if let Some(other) = &status.test
            && *other != run.state.cycler_test
        {
            if other.starts_with(&cycler_test_name(run.journal.test_id())) {
                // An earlier segment of this test still shows: the cycler is loading the
                // next one.
                self.not_started_yet(k).await;
                return Ok(());
            }
            let reason = format!(
                "the channel now runs {other:?} on {}, not this test ({}); records after {} \
                 stay in the cycler's own data",
                self.device,
                run.state.cycler_test,
                run.state.next_index - 1
            );
            self.end(k, Ending::Faulted(reason));
            return Ok(());
        }
        self.guard_chamber(k).await;
        if self.slots[k].run.as_ref().is_some_and(|r| r.stop_pending) {
            let addr = self.slots[k].addr;
            self.cycler.stop(addr).await?;
            if let Some(run) = self.slots[k].run.as_mut() {
                run.stop_pending = false;
            }
        }
        if !self.deferred {
            let mut pages = 0;
            while pages < PAGES_PER_POLL {
                let Some(run) = &self.slots[k].run else {
                    break;
                };
                if run.state.next_index > status.last_record {
                    break;
                }
                let from = run.state.next_index;
                let records = self
                    .cycler
                    .records(self.slots[k].addr, from, PAGE_RECORDS)
                    .await?;
                if records.is_empty() {
                    break;
                }
                if let Some(decision) = self.store(k, &records) {
                    self.decide(k, decision).await;
                }
                pages += 1;
            }
        }
        self.watch_live_temperature(k).await?;
        let Some(run) = self.slots[k].run.as_mut() else {
            return Ok(());
        };
        let caught_up = run.state.next_index > status.last_record;
        let previous = std::mem::replace(&mut run.last_state, status.state.clone());
        let t = run.now(&self.shared.clock);
        match &status.state {
            ChannelState::Running => {
                run.state.seen_active = true;
                if previous == ChannelState::Paused {
                    self.event(k, t, "state", "resumed on the cycler".into());
                    self.slots[k]
                        .live
                        .send_modify(|s| s.state = "running".into());
                }
            }
            ChannelState::Paused => {
                run.state.seen_active = true;
                if previous != ChannelState::Paused {
                    self.event(k, t, "state", "paused on the cycler".into());
                    self.slots[k]
                        .live
                        .send_modify(|s| s.state = "paused".into());
                }
            }
            ChannelState::Idle => {
                run.idle_polls += 1;
                if let Some(fault) = run.fault.clone() {
                    self.end(k, Ending::Faulted(fault));
                } else if run.state.seg.exit.is_some()
                    && run.stop_reason.is_none()
                    && run.state.seen_active
                {
                    let exit = run.state.seg.exit;
                    self.segment_over(k, exit).await;
                } else if run.state.seen_active || run.stop_reason.is_some() {
                    let ending = run.stop_reason.clone().unwrap_or_else(|| {
                        Ending::Stopped(
                            "the channel went idle on the cycler (test cleared there)".into(),
                        )
                    });
                    self.end(k, ending);
                } else if run.state.seg.number > 1 {
                    // A later segment not showing yet (its start may be unanswered).
                    run.idle_polls -= 1;
                    self.not_started_yet(k).await;
                } else if run.idle_polls > START_GRACE_POLLS {
                    let reason = format!(
                        "the cycler still shows the channel idle {START_GRACE_POLLS} polls after \
                         the start: the test did not start"
                    );
                    self.end(k, Ending::Faulted(reason));
                }
            }
            terminal if caught_up => {
                // The segment is over: the test ends, or goes on where the daemon's decision
                // or the segment's own end leads.
                let ending = match terminal {
                    _ if run.fault.is_some() => {
                        Ending::Faulted(run.fault.clone().unwrap_or_default())
                    }
                    ChannelState::Fault { reason } => Ending::Faulted(format!(
                        "{} reports a fault on the channel: {reason}",
                        self.device
                    )),
                    _ if run.stop_reason.is_some() => run
                        .stop_reason
                        .clone()
                        .unwrap_or_else(|| Ending::Stopped("stopped on the cycler".into())),
                    _ if run.state.seg.exit.is_some() => {
                        let exit = run.state.seg.exit;
                        self.segment_over(k, exit).await;
                        self.maybe_send(k);
                        return Ok(());
                    }
                    ChannelState::Finished => {
                        self.segment_over(k, None).await;
                        self.maybe_send(k);
                        return Ok(());
                    }
                    _ => Ending::Stopped("stopped on the cycler".into()),
                };
                self.end(k, ending);
            }
            _ => {}
        }
        self.maybe_send(k);
        Ok(())
    }

    /// Stops the test on channel `k` through the cycler when its chamber is unsafe (once; the
    /// test ends as faulted when the cycler reports it stopped, after its last records).
    async fn guard_chamber(&mut self, k: usize) {
        let slot = &self.slots[k];
        let (Some(chamber), Some(run)) = (&slot.spec.chamber, &slot.run) else {
            return;
        };
        if run.fault.is_some() {
            return;
        }
        let Some(fault) = chamber.state().fault.clone() else {
            return;
        };
        let addr = slot.addr;
        let reason = format!("stopped on the cycler for safety: {fault}");
        tracing::warn!(channel = %slot.spec.id, "{reason}");
        if let Err(e) = self.cycler.stop(addr).await {
            // Tried again on the next poll.
            tracing::error!(channel = %self.slots[k].spec.id, "cannot stop the test on the cycler: {e}");
            return;
        }
        let t = run.now(&self.shared.clock);
        self.send_batch(k);
        self.event(k, t, "alarm", reason.clone());
        if let Some(run) = self.slots[k].run.as_mut() {
            run.fault = Some(reason);
        }
    }

    /// Stores downloaded records under their sequence numbers, recording step changes; the
    /// first decision a watched condition brought, if one did.
    fn store(&mut self, k: usize, records: &[Record]) -> Option<Decision> {
        let chamber = self.slots[k].spec.chamber.clone();
        let air = chamber.as_ref().map(|c| c.history());
        let mut decision = None;
        for r in records {
            let Some(run) = self.slots[k].run.as_mut() else {
                return decision;
            };
            // The cycler counts each segment's test time from 0.
            let r = &Record {
                test_time_s: run.state.seg.time_base_s + r.test_time_s,
                ..*r
            };
            if r.index < run.state.next_index {
                continue;
            }
            if r.index > run.state.next_index {
                let (from, to) = (run.state.next_index, r.index - 1);
                let t = r.test_time_s;
                self.send_batch(k);
                self.event(
                    k,
                    t,
                    "gap",
                    format!(
                        "records {from}..={to} cannot be downloaded from {} (its protocol has \
                         no way to read them); they stay in the cycler's own data file",
                        self.device
                    ),
                );
            }
            // The cycler's step number becomes the plan step; the step count and the cycle
            // are the plan's (the cycler's own counters differ per target).
            let run = self.slots[k].run.as_mut().expect("checked above");
            let placed = run.state.steps.place(&run.plan, r.step, r.cycle);
            run.state.step = placed.step_count;
            run.state.cycle = placed.cycle;
            if placed.changed {
                run.state.seg.step_start_s = r.test_time_s;
            }
            if placed.changed {
                let message = step_text(&run.plan, placed.plan_step);
                self.send_batch(k);
                self.event(k, r.test_time_s, "step", message);
            }
            let run = self.slots[k].run.as_mut().expect("checked above");
            run.state.integrate(r);
            run.state.last_temperature_c = r.temperature_c;
            run.state.next_index = r.index + 1;
            run.state.seen_active = true;
            let start_unix_s = run.journal.start_unix_s();
            let ambient_c = air
                .as_ref()
                .and_then(|h| h.at(start_unix_s + r.test_time_s, AMBIENT_MAX_AGE_S));
            if decision.is_none() && run.fault.is_none() {
                let reading = Reading {
                    test_time_s: r.test_time_s,
                    voltage_v: r.voltage_v,
                    current_a: r.current_a,
                    temperature_c: r.temperature_c,
                    chamber_c: ambient_c,
                };
                decision = run
                    .state
                    .watch(&run.course, &run.plan, placed.plan_step, reading);
            }
            let s = &run.state;
            run.journal.push(Sample {
                test_time_s: r.test_time_s,
                unix_time_s: start_unix_s + r.test_time_s,
                voltage_v: r.voltage_v,
                current_a: r.current_a,
                cycle: placed.cycle,
                step: placed.step_count,
                plan_step: u32::try_from(placed.plan_step).unwrap_or(u32::MAX),
                charge_ah: s.charge_ah,
                discharge_ah: s.discharge_ah,
                charge_wh: s.charge_wh,
                discharge_wh: s.discharge_wh,
                temperature_c: r.temperature_c,
                ambient_c,
            });
            if run.journal.is_full() {
                self.send_batch(k);
            }
        }
        let slot = &self.slots[k];
        if let (Some(run), Some(r)) = (&slot.run, records.last()) {
            let (samples, s) = (run.journal.samples(), &run.state);
            let description = s
                .steps
                .last()
                .map(|p| step_text(&run.plan, p.plan_step))
                .unwrap_or_default();
            let read_at = run.journal.start_unix_s() + r.test_time_s;
            slot.live.send_modify(|snap| {
                snap.reading_unix_s = read_at;
                snap.voltage_v = r.voltage_v;
                snap.current_a = r.current_a;
                snap.temperature_c = r.temperature_c.unwrap_or(f64::NAN);
                snap.ambient_temperature_c = chamber
                    .as_ref()
                    .and_then(|c| c.state().temperature_c)
                    .unwrap_or(f64::NAN);
                snap.test_time_s = r.test_time_s;
                snap.step = s.step;
                snap.cycle = s.cycle;
                snap.step_description = description;
                let total = (s.charge_ah, s.discharge_ah);
                run.journal.show_throughput(snap, (s.step, s.cycle), total);
                snap.samples = samples;
            });
        }
        decision
    }

    /// The cycler did not answer (or answered nonsense): record it once, try to reconnect.
    async fn link_trouble(&mut self, e: DriverError) {
        self.shared.device_error();
        let now = self.shared.clock.unix_time_s();
        if self.link_lost.is_none() {
            tracing::warn!(device = %self.device, "cannot follow the cycler: {e}");
            self.link_lost = Some((now, e.to_string()));
            for k in 0..self.slots.len() {
                let Some(run) = &self.slots[k].run else {
                    continue;
                };
                let t = now - run.journal.start_unix_s();
                self.send_batch(k);
                self.event(
                    k,
                    t,
                    "link",
                    format!(
                        "communication with {} lost: {e}; the cycler goes on with the test and \
                         what it logs meanwhile is downloaded when the link is back",
                        self.device
                    ),
                );
                self.slots[k]
                    .live
                    .send_modify(|s| s.reason = "link to the cycler lost".into());
            }
        }
        if e.is_link_lost()
            && let Err(e) = self.shared.reconnected(self.cycler.reconnect().await)
        {
            tracing::debug!(device = %self.device, "reconnect failed: {e}");
        }
    }
}
