//! Alerts: telling a person when a test ends or faults, a channel or the hub is lost for long,
//! the outbox fills, a chamber alarms, or a cell's capacity fades (`[alerts]` in the
//! configuration).
//!
//! - [`rules`]: the rules against what the daemon sees, no I/O.
//! - [`store`]: every raised alert is written to a small SQLite file before it is sent, and
//!   marked per target once the receiver took it: an alert raised while the network is down
//!   arrives when it returns, once, also across a restart.
//! - [`webhook`], [`email`]: the two ways out.
//!
//! Two tasks run: the monitor (observes the daemon on every channel change and every
//! `check_interval_ms`, raises and stores) and the delivery (sends what is pending, retrying
//! with a doubling wait; at once when the hub comes back, a sign the network did).

pub mod email;
pub mod rules;
pub mod store;
pub mod webhook;

use crate::config::alerts::{AlertRule, AlertsSection, Target};
use crate::proto::control::ChannelSnapshot;
use rules::{Engine, Observation};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{AlertView, Store, StoredAlert};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How many alerts `cyclerctl status` and the web monitor show.
pub const RECENT: usize = 20;

/// The first wait after a failed delivery; it doubles up to `max_retry_s`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Who raises the alerts, as receivers are told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// `[daemon] name`.
    pub daemon: String,
    /// `[hub] lab`, if set.
    pub lab: String,
}

/// Unix ms now, on the wall clock.
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `unix_ms` as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_ms: i64) -> String {
    let (secs, ms) = (unix_ms.div_euclid(1000), unix_ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The one line a person sees first (the chat message, the mail's subject).
pub fn headline(alert: &StoredAlert, origin: &Origin) -> String {
    let mut who = origin.daemon.clone();
    if !origin.lab.is_empty() {
        who = format!("{} / {who}", origin.lab);
    }
    format!("[{who}] {}", alert.text)
}

/// The mail's body: the headline and every field.
pub fn email_body(alert: &StoredAlert, origin: &Origin) -> String {
    let mut out = format!("{}\n\n", alert.text);
    for (name, value) in [
        ("kind", alert.kind.name()),
        ("daemon", &origin.daemon),
        ("lab", &origin.lab),
        ("channel", &alert.channel),
        ("test", &alert.test_id),
        ("reason", &alert.reason),
        ("raised at", &rfc3339(alert.raised_unix_ms)),
        ("alert id", &alert.uuid),
    ] {
        if !value.is_empty() {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    out
}

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

/// The wait after the `attempts`-th failed delivery.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(max)
}

/// The alert service; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    origin: Origin,
    rules: Vec<AlertRule>,
    webhook: Option<webhook::Webhook>,
    mailer: Option<email::Mailer>,
    /// Wakes the delivery when an alert was stored or a retry is due at once.
    wake: Notify,
    /// Set by [`Alerts::retry_now`]: the next delivery pass ignores the backoff.
    retry_now: AtomicBool,
    /// The newest alerts and their deliveries, after every change.
    recent: watch::Sender<Vec<AlertView>>,
    check_interval: Duration,
    max_retry: Duration,
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
        let webhook = section
            .webhook
            .as_ref()
            .map(webhook::Webhook::new)
            .transpose()?;
        let mailer = section.email.as_ref().map(email::Mailer::new).transpose()?;
        let store = Store::open(store_path, unix_ms_now())?;
        let recent = store.recent(RECENT)?;
        Ok(Some(Alerts {
            inner: Arc::new(Inner {
                store,
                origin,
                rules: section.rules.clone(),
                webhook,
                mailer,
                wake: Notify::new(),
                retry_now: AtomicBool::new(false),
                recent: watch::Sender::new(recent),
                check_interval: Duration::from_millis(section.check_interval_ms.unwrap_or(1000)),
                max_retry: Duration::from_secs(section.max_retry_s.unwrap_or(300)),
            }),
        }))
    }

    /// The rules' engine, with the retention references kept in the store.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let mut targets = Vec::new();
        if self.inner.webhook.is_some() {
            targets.push(Target::Webhook);
        }
        if self.inner.mailer.is_some() {
            targets.push(Target::Email);
        }
        let mut engine = Engine::new(self.inner.rules.clone(), targets);
        for (test_id, cycle, ah) in self.inner.store.baselines()? {
            engine.set_baseline(&test_id, cycle, ah);
        }
        Ok(engine)
    }

    /// Runs `o` through the rules and keeps what they raise for delivery; the alerts newly
    /// stored.
    pub fn observe(&self, engine: &mut Engine, o: &Observation) -> usize {
        let raised = engine.observe(o, Instant::now(), unix_ms_now());
        let mut added = 0;
        for r in &raised {
            match self.inner.store.insert(r) {
                Ok(true) => {
                    added += 1;
                    tracing::warn!(kind = r.kind.name(), "alert: {}", r.text);
                }
                Ok(false) => {}
                Err(e) => tracing::error!("alert store: {e}; alert not kept: {}", r.text),
            }
        }
        if added > 0 {
            self.refresh();
            self.inner.wake.notify_one();
        }
        added
    }

    /// The newest alerts, newest first, with their deliveries.
    pub fn recent(&self) -> Vec<AlertView> {
        self.inner.recent.borrow().clone()
    }

    /// Receives [`Alerts::recent`] after every change (raised, delivered, failed).
    pub fn watch(&self) -> watch::Receiver<Vec<AlertView>> {
        self.inner.recent.subscribe()
    }

    /// Tries every pending delivery now, whatever its backoff (the network came back).
    pub fn retry_now(&self) {
        self.inner.retry_now.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    fn refresh(&self) {
        match self.inner.store.recent(RECENT) {
            Ok(recent) => {
                self.inner.recent.send_replace(recent);
            }
            Err(e) => tracing::error!("alert store: {e}"),
        }
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
        let mut tick = tokio::time::interval(self.inner.check_interval);
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
                    if let Err(e) = self.inner.store.keep_baseline(test_id, *cycle, *ah) {
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

    /// Delivers what is pending until `stop`: each target in turn, a failed one again after
    /// [`backoff`]. What is still pending at `stop` stays in the store for the next start.
    pub async fn deliver(self, mut stop: watch::Receiver<bool>) {
        let mut due: HashMap<(i64, Target), Instant> = HashMap::new();
        loop {
            if self.inner.retry_now.swap(false, Ordering::AcqRel) {
                due.clear();
            }
            let pending = match self.inner.store.pending() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("alert store: {e}");
                    Vec::new()
                }
            };
            let mut soonest: Option<Instant> = None;
            for (alert, target, attempts) in pending {
                if *stop.borrow() {
                    return;
                }
                let now = Instant::now();
                if let Some(at) = due.get(&(alert.id, target)).filter(|at| **at > now) {
                    soonest = Some(soonest.map_or(*at, |s| s.min(*at)));
                    continue;
                }
                let result = self.send(&alert, target).await;
                let stored = match &result {
                    Ok(()) => {
                        due.remove(&(alert.id, target));
                        tracing::info!(
                            kind = alert.kind.name(),
                            target = target.name(),
                            "alert delivered: {}",
                            alert.text
                        );
                        self.inner.store.delivered(alert.id, target, unix_ms_now())
                    }
                    Err(e) => {
                        let at = Instant::now() + backoff(attempts + 1, self.inner.max_retry);
                        due.insert((alert.id, target), at);
                        soonest = Some(soonest.map_or(at, |s| s.min(at)));
                        tracing::warn!(
                            kind = alert.kind.name(),
                            target = target.name(),
                            "alert not delivered (attempt {}): {e}",
                            attempts + 1
                        );
                        self.inner.store.failed(alert.id, target, e)
                    }
                };
                if let Err(e) = stored {
                    tracing::error!("alert store: {e}");
                }
                self.refresh();
            }
            let retry = async {
                match soonest {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = retry => {}
                _ = self.inner.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn send(&self, alert: &StoredAlert, target: Target) -> Result<(), String> {
        let origin = &self.inner.origin;
        match target {
            Target::Webhook => match &self.inner.webhook {
                Some(w) => w.send(alert, origin).await,
                None => Err("no [alerts.webhook] is configured any more".into()),
            },
            Target::Email => match &self.inner.mailer {
                Some(m) => m.send(alert, origin).await,
                None => Err("no [alerts.email] is configured any more".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
