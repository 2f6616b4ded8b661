//! Alerts: telling a person when a test ends or faults, a channel or the hub is lost for long,
//! the outbox fills, a chamber alarms, or a cell's capacity fades (`[alerts]` in the
//! configuration).
//!
//! - [`rules`]: the rules against what the daemon sees, no I/O.
//! - the store and the delivery (webhook, e-mail) are [`cyclerd_alerts`], which the hub's
//!   lab-wide rules use too.
//!
//! Two tasks run: the monitor (observes the daemon on every channel change and every
//! `check_interval_ms`, raises and stores) and the delivery (sends what is pending, retrying
//! with a doubling wait; at once when the hub comes back, a sign the network did).

pub mod rules;

pub use cyclerd_alerts::{
    Origin, RECENT, Raised, backoff, email, email_body, headline, rfc3339, store, unix_ms_now,
    webhook,
};

use crate::config::alerts::{AlertRule, AlertsSection};
use crate::proto::control::ChannelSnapshot;
use cyclerd_alerts::Delivery;
use rules::{Engine, Observation};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use store::AlertView;
use tokio::sync::watch;
use tokio::time::Instant;

/// An alert in one line for a person (`cyclerctl status`, the web monitor): when (UTC, to the
/// minute), what, and how each target's delivery went.
pub fn line(a: &crate::proto::control::Alert) -> String {
    let at = rfc3339((a.raised_unix_s * 1000.0) as i64);
    let sent: Vec<String> = a
        .deliveries
        .iter()
        .map(|d| match (d.delivered, d.last_error.is_empty()) {
            (true, _) => format!("{} sent", d.target),
            (false, true) => format!("{} pending", d.target),
            (false, false) => format!(
                "{} NOT SENT after {} attempts: {}",
                d.target, d.attempts, d.last_error
            ),
        })
        .collect();
    format!(
        "{} {} UTC {} [{}]",
        &at[..10],
        &at[11..16],
        a.text,
        sent.join("; ")
    )
}

/// The daemon's alert service: its rules over a [`Delivery`]; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    delivery: Delivery,
    /// `[[alerts.rule]]`.
    rules: Vec<AlertRule>,
    /// `check_interval_ms`: how often lasting conditions are looked at.
    check_interval: Duration,
}

impl Alerts {
    /// Opens the store and reads the secrets (URL file, password); `None` when no rule is
    /// configured. Errors name the key or file.
    pub fn open(
        section: &AlertsSection,
        store_path: &Path,
        origin: Origin,
    ) -> anyhow::Result<Option<Alerts>> {
        if section.rules.is_empty() {
            return Ok(None);
        }
        Ok(Some(Alerts {
            delivery: Delivery::open(section, store_path, origin)?,
            rules: section.rules.clone(),
            check_interval: Duration::from_millis(section.check_interval_ms.unwrap_or(1000)),
        }))
    }

    /// The rules' engine, with the retention references kept in the store.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let mut engine = Engine::new(self.rules.clone(), self.delivery.targets());
        for (test_id, cycle, ah) in self.delivery.store().baselines()? {
            engine.set_baseline(&test_id, cycle, ah);
        }
        Ok(engine)
    }

    /// Runs `o` through the rules and keeps what they raise for delivery; the alerts newly
    /// stored.
    pub fn observe(&self, engine: &mut Engine, o: &Observation) -> usize {
        let raised = engine.observe(o, Instant::now(), unix_ms_now());
        self.delivery.raise(&raised)
    }

    /// The newest alerts, newest first, with their deliveries.
    pub fn recent(&self) -> Vec<AlertView> {
        self.delivery.recent()
    }

    /// Receives [`Alerts::recent`] after every change (raised, delivered, failed).
    pub fn watch(&self) -> watch::Receiver<Vec<AlertView>> {
        self.delivery.watch()
    }

    /// Tries every pending delivery now, whatever its backoff (the network came back).
    pub fn retry_now(&self) {
        self.delivery.retry_now();
    }

    /// Delivers what is pending until `stop` ([`Delivery::deliver`]).
    pub async fn deliver(self, stop: watch::Receiver<bool>) {
        self.delivery.deliver(stop).await;
    }

    /// Watches the daemon: `observe` on every change of a channel in `changes` and every
    /// `check_interval_ms`, until `stop`; a last look when stopped.
    pub async fn monitor(
        self,
        mut observe: impl FnMut() -> Observation + Send,
        mut changes: Vec<watch::Receiver<ChannelSnapshot>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut engine = match self.engine() {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!("alert store: {e}; no alerts will be raised");
                return;
            }
        };
        let mut kept: HashSet<String> = engine.baselines().keys().cloned().collect();
        let mut tick = tokio::time::interval(self.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hub_was_up = true;
        loop {
            let o = observe();
            if o.hub_connected && !hub_was_up {
                self.retry_now();
            }
            hub_was_up = o.hub_connected;
            self.observe(&mut engine, &o);
            for (test_id, (cycle, ah)) in engine.baselines() {
                if !kept.contains(test_id) {
                    if let Err(e) = self.delivery.store().keep_baseline(test_id, *cycle, *ah) {
                        tracing::error!("alert store: {e}");
                    }
                    kept.insert(test_id.clone());
                }
            }
            if *stop.borrow() {
                return;
            }
            let changed = async {
                if changes.is_empty() {
                    return std::future::pending::<bool>().await;
                }
                let any =
                    futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
                any.await.0.is_ok()
            };
            let lost = tokio::select! {
                _ = tick.tick() => false,
                ok = changed => !ok,
                _ = stop.changed() => false,
            };
            if lost {
                // A channel's runner is gone (shutdown): the ticks go on.
                changes.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests;
