//! The stepped channel's poll loop: read the stage, check that its output and setpoints are
//! still the ones written (another client may have changed them), step the engine, record,
//! write setpoints, and rest with the output off while the outbox is full.

use super::{ChannelRunner, Run};
use crate::channel::journal::Sample;
use crate::channel::{ChannelCmd, Ending, StartError};
use cyclerd_drivers::stage::{PowerStage, Reading};
use cyclerd_protocols::plan::Record;
use cyclerd_protocols::{Command, Measurement, Outcome, PlanStep};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How often a link that stays down is logged again (the event records its loss once).
const LINK_SUMMARY: std::time::Duration = std::time::Duration::from_secs(30);

impl<D: PowerStage> ChannelRunner<D> {
    /// Polls until the test ends, is stopped, or the daemon shuts down.
    pub(super) async fn drive(
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
                chamber.set_point(run.journal.test_id(), temperature_c);
            }
            let mut ticks = clock.pacer(self.spec.poll_interval_s);
            let mut last_good = Instant::now();
            // Test time at which the link went quiet, while it is.
            let mut link_lost_at: Option<f64> = None;
            // When the lost link was last logged, while it is.
            let mut link_warned: Option<Instant> = None;
            loop {
                // A timed end due before the next tick gets a poll of its own, at its time.
                let timed_end = run
                    .engine
                    .next_timed_end()
                    .map(|t| t + run.paused_s - run.now(&clock))
                    .filter(|wait| *wait > 0.0 && *wait < self.spec.poll_interval_s);
                let at_timed_end = async {
                    match timed_end {
                        Some(wait) => clock.sleep(wait).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        break 'test self.safe_stop(Ending::daemon_stopped()).await;
                    }
                    Some(cmd) = cmds.recv() => match cmd {
                        ChannelCmd::Stop { reason, reply } => {
                            let _ = reply.send(Ok(()));
                            break 'test self.safe_stop(Ending::stopped_by(reason)).await;
                        }
                        ChannelCmd::Start { reply, .. } => {
                            let _ = reply.send(Err(StartError::Busy {
                                channel: self.spec.id.clone(),
                                test_id: run.journal.test_id().into(),
                            }));
                            continue;
                        }
                        ChannelCmd::Ping { reply } => {
                            let _ = reply.send(());
                            continue;
                        }
                    },
                    _ = ticks.tick() => {}
                    _ = at_timed_end => {}
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
                        link_warned = None;
                        if let Some(since) = link_lost_at.take() {
                            let now = run.now(&clock);
                            run.event(
                                now,
                                "link",
                                format!("communication restored after {:.1} s", now - since),
                            );
                        }
                        r
                    }
                    Err(e) => {
                        self.shared.device_error();
                        if link_lost_at.is_none() {
                            let now = run.now(&clock);
                            link_lost_at = Some(now);
                            run.flush();
                            run.event(now, "link", format!("communication lost: {e}"));
                        }
                        if last_good.elapsed() >= self.spec.comm_timeout {
                            break 'test self
                                .fault(format!(
                                    "lost communication for more than {} ms: {e}",
                                    self.spec.comm_timeout.as_millis()
                                ))
                                .await;
                        }
                        // Said once when the link goes (above, as an event and here), then
                        // every LINK_SUMMARY while it stays down, not once per poll.
                        if link_warned.is_none_or(|at: Instant| at.elapsed() >= LINK_SUMMARY) {
                            let down = last_good.elapsed().as_secs_f64();
                            tracing::warn!(channel = %self.spec.id, "no good reply for {down:.1} s, retrying: {e}");
                            link_warned = Some(Instant::now());
                        } else {
                            tracing::debug!(channel = %self.spec.id, "read failed, retrying: {e}");
                        }
                        if e.is_link_lost()
                            && let Err(e) = self.shared.reconnected(self.device.reconnect().await)
                        {
                            tracing::debug!(channel = %self.spec.id, "reconnect failed: {e}");
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
        let test_time_s = run.now(&self.shared.clock);
        let (step_before, cycle_before, plan_step_before, rule) = {
            let s = run.engine.status();
            let rule = match run.engine.plan().steps.get(s.plan_index) {
                Some(PlanStep::Action(a)) => a.record,
                _ => Record::default(),
            };
            (s.step_count, s.cycle, s.plan_index, rule)
        };
        let (chamber_c, chamber_fault) = match &self.spec.chamber {
            Some(link) => {
                let state = link.state();
                (state.temperature_c, state.fault.clone())
            }
            None => (None, None),
        };
        // Judged against the command in force when the device was read, before the engine moves.
        let foreign = self.foreign_change(run, reading);
        let update = run.engine.update(&Measurement {
            chamber_c,
            test_time_s: test_time_s - run.paused_s,
            voltage_v: reading.voltage_v,
            current_a: reading.current_a,
            temperature_c: reading.temperature_c,
        });
        let status = run.engine.status();
        let fired = update.step_changed
            || foreign.is_some()
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
            run.journal.push(Sample {
                test_time_s,
                unix_time_s: run.journal.start_unix_s() + test_time_s,
                voltage_v: reading.voltage_v,
                current_a: reading.current_a,
                cycle: cycle_before,
                step: step_before,
                plan_step: u32::try_from(plan_step_before).unwrap_or(u32::MAX),
                charge_ah: status.charge_capacity_ah,
                discharge_ah: status.discharge_capacity_ah,
                charge_wh: status.charge_energy_wh,
                discharge_wh: status.discharge_energy_wh,
                temperature_c: reading.temperature_c,
                ambient_c: chamber_c,
            });
        }
        let samples = run.journal.samples();
        let total = (status.charge_capacity_ah, status.discharge_capacity_ah);
        let place = (status.step_count, status.cycle);
        let read_at = run.journal.start_unix_s() + test_time_s;
        self.live.send_modify(|s| {
            s.reading_unix_s = read_at;
            s.voltage_v = reading.voltage_v;
            s.current_a = reading.current_a;
            s.temperature_c = reading.temperature_c.unwrap_or(f64::NAN);
            s.ambient_temperature_c = chamber_c.unwrap_or(f64::NAN);
            s.test_time_s = test_time_s;
            run.journal.show_throughput(s, place, total);
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
        if let Some(change) = foreign {
            return Err(change);
        }
        if let Some(outcome) = update.outcome {
            return match outcome {
                Outcome::Finished => {
                    self.switch_off("at the end of the protocol").await;
                    Ok(Some(Ending::Finished))
                }
                Outcome::Faulted(reason) => Err(reason),
            };
        }
        if update.step_changed {
            run.flush();
            self.step_event(run, test_time_s);
        }
        if update.command != run.command {
            run.command = update.command;
            if let (Command::Chamber { temperature_c }, Some(chamber)) =
                (run.command, &self.spec.chamber)
            {
                chamber.set_point(run.journal.test_id(), temperature_c);
            }
            if let Err(e) = self.device.apply(&run.command).await {
                return Err(format!("cannot write a setpoint: {e}"));
            }
        }
        if run.journal.is_due(self.spec.commit_interval) {
            run.flush();
        }
        Ok(None)
    }

    /// A change of the output or the setpoints that the runner did not make (another client on
    /// the device's bus, a front panel): what changed, for the fault.
    fn foreign_change(&self, run: &Run, reading: &Reading) -> Option<String> {
        if reading.output_on && !run.command.output_on() {
            return Some(format!(
                "the output was switched on by another client while the step ({}) keeps it off",
                run.engine.status().description
            ));
        }
        let (read, written) = (reading.setpoints?, self.device.written()?);
        let changes = written.changes(&read);
        (!changes.is_empty()).then(|| {
            format!(
                "the setpoints were changed by another client: {}",
                changes.join(", ")
            )
        })
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
        let paused_at = run.now(&clock);
        run.flush();
        run.event(paused_at, "state", "paused: the outbox is full (store.max_bytes or disk); output off until the hub takes the backlog".into());
        self.live.send_modify(|s| {
            s.state = "paused".into();
            s.reason = "outbox full".into();
            s.current_a = 0.0;
        });
        tracing::warn!(channel = %self.spec.id, "paused: the outbox is full");
        let ending = loop {
            tokio::select! {
                _ = shutdown.changed() => break Some(self.safe_stop(Ending::daemon_stopped()).await),
                Some(cmd) = cmds.recv() => match cmd {
                    ChannelCmd::Stop { reason, reply } => {
                        let _ = reply.send(Ok(()));
                        break Some(self.safe_stop(Ending::stopped_by(reason)).await);
                    }
                    ChannelCmd::Start { reply, .. } => {
                        let _ = reply.send(Err(StartError::Busy { channel: self.spec.id.clone(), test_id: run.journal.test_id().into() }));
                    }
                    ChannelCmd::Ping { reply } => {
                        let _ = reply.send(());
                    }
                },
                room = async { space.wait_for(|room| *room).await.is_ok() } => {
                    if !room {
                        break Some(self.safe_stop(Ending::Stopped("the outbox writer stopped".into())).await);
                    }
                    break None;
                }
            }
        };
        let resumed_at = run.now(&clock);
        run.paused_s += resumed_at - paused_at;
        if ending.is_none() {
            run.event(
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
}
