//! Alert delivery, shared by the cyclerd daemon and the hub (each has its own rules over what
//! it sees): the `[alerts]` configuration, a durable store of raised alerts, and their delivery
//! by webhook and e-mail, retried until each target took them.
//!
//! # Layout
//! - [`config`]: the `[alerts]` section (rules, `[alerts.webhook]`, `[alerts.email]`) and its
//!   checks, the daemon's and the hub's.
//! - [`store`]: every raised alert is written to a small SQLite file before it is sent, and
//!   marked per target once the receiver took it: an alert raised while the network is down
//!   arrives when it returns, once, also across a restart.
//! - [`webhook`], [`email`]: the two ways out.
//! - here: [`Raised`] (what rules produce), [`Delivery`] (store, then send with a doubling
//!   wait), and the texts a person reads.

pub mod config;
pub mod email;
pub mod store;
pub mod webhook;

use config::{AlertKind, AlertsSection, Target};
use std::collections::HashMap;
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
pub use cyclerd_proto::time::rfc3339_ms as rfc3339;

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

/// The wait after the `attempts`-th failed delivery.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(max)
}

/// An alert a rule raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub kind: AlertKind,
    /// Unique per occurrence (a test's end, an episode of a condition): the store keeps one
    /// alert per key, so seeing the same thing again, also after a restart, raises nothing new.
    pub key: String,
    /// The channel (or chamber, or daemon) it is about; empty for the hub and the outbox.
    pub channel: String,
    /// The test it is about, if any.
    pub test_id: String,
    /// The reason given (a fault's text, the hub's error), if any.
    pub reason: String,
    /// One sentence for a person.
    pub text: String,
    /// Where it goes.
    pub targets: Vec<Target>,
    /// When it was raised (Unix ms).
    pub raised_unix_ms: i64,
}

/// Stores raised alerts and delivers them; cheap to clone. Its `Debug` shows the targets with
/// their secrets redacted.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    origin: Origin,
    webhook: Option<webhook::Webhook>,
    mailer: Option<email::Mailer>,
    /// Wakes the delivery when an alert was stored or a retry is due at once.
    wake: Notify,
    /// Set by [`Delivery::retry_now`]: the next delivery pass ignores the backoff.
    retry_now: AtomicBool,
    /// The newest alerts and their deliveries, after every change.
    recent: watch::Sender<Vec<AlertView>>,
    max_retry: Duration,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("origin", &self.inner.origin)
            .field("webhook", &self.inner.webhook)
            .field("mailer", &self.inner.mailer)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Opens the store and reads the secrets (URL file, password); errors name the key or
    /// file.
    pub fn open(
        section: &AlertsSection,
        store_path: &Path,
        origin: Origin,
    ) -> anyhow::Result<Delivery> {
        let webhook = section
            .webhook
            .as_ref()
            .map(webhook::Webhook::new)
            .transpose()?;
        let mailer = section.email.as_ref().map(email::Mailer::new).transpose()?;
        let store = Store::open(store_path, unix_ms_now())?;
        let recent = store.recent(RECENT)?;
        Ok(Delivery {
            inner: Arc::new(Inner {
                store,
                origin,
                webhook,
                mailer,
                wake: Notify::new(),
                retry_now: AtomicBool::new(false),
                recent: watch::Sender::new(recent),
                max_retry: Duration::from_secs(section.max_retry_s.unwrap_or(300)),
            }),
        })
    }

    /// The targets configured: where a rule without `send_to` sends.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.inner.webhook.is_some() {
            targets.push(Target::Webhook);
        }
        if self.inner.mailer.is_some() {
            targets.push(Target::Email);
        }
        targets
    }

    /// The store, for what rules keep across restarts (retention baselines).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Keeps what rules raised for delivery (an alert whose key is stored already is not kept
    /// again); the alerts newly stored.
    pub fn raise(&self, raised: &[Raised]) -> usize {
        let mut added = 0;
        for r in raised {
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

    /// Receives [`Delivery::recent`] after every change (raised, delivered, failed).
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
