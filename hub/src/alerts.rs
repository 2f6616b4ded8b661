//! The hub's lab-wide alerts (`cyclerhub serve --alerts FILE`): what only the place every lab PC
//! uploads to can see. A daemon whose PC died cannot say so; the hub raises `daemon_offline`
//! when a daemon that uploaded has had no stream open for `after_s`. Tests ending or faulting
//! and capacity retention are raised for every lab (or the rule's `labs`) from what the hub
//! stores, so one rule covers the whole site.
//!
//! The file is the daemon's `[alerts]` section (`cyclerd_alerts::config`), checked with the
//! hub's rules; delivery, retries and the durable store are `cyclerd_alerts::Delivery`, as in
//! the daemon. [`Engine`] is the rules, no I/O; [`HubAlerts::run`] looks at the store every
//! `check_interval_ms` (default 10 s).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use cyclerd_alerts::config::{
    AlertKind, AlertRule, AlertsSection, DEFAULT_AFTER_S, DEFAULT_BELOW, Target,
};
use cyclerd_alerts::store::AlertView;
use cyclerd_alerts::{Delivery, Origin, Raised, unix_ms_now};
use cyclerd_proto::cycles::first_full;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::HubStore;

/// The alerts file: the daemon's `[alerts]` section, alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    alerts: AlertsSection,
}

/// Reads and checks an alerts file; errors name the file and the key.
pub fn load(path: &Path) -> anyhow::Result<AlertsSection> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the alerts file {}", path.display()))?;
    let file: AlertsFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the alerts file {}: {e}", path.display()))?;
    file.alerts
        .validate_for_hub()
        .map_err(|e| anyhow::anyhow!("the alerts file {}: {e}", path.display()))?;
    Ok(file.alerts)
}

/// Which daemons have an upload stream open, and since when each has none: kept by the upload
/// streams, read by the `daemon_offline` rule. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    inner: Arc<Mutex<HashMap<String, Seen>>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Streams open now.
    open: usize,
    /// When the last one closed (the Unix ms names the episode in the alert's key).
    closed_at: Silent,
}

/// Marks a daemon connected while it lives.
#[derive(Debug)]
pub struct Connected {
    presence: Presence,
    daemon_id: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut map = self.presence.lock();
        if let Some(seen) = map.get_mut(&self.daemon_id) {
            seen.open = seen.open.saturating_sub(1);
            if seen.open == 0 {
                seen.closed_at = (Instant::now(), unix_ms_now());
            }
        }
    }
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `daemon_id` opened a stream; it counts as connected until the guard drops.
    pub fn connected(&self, daemon_id: &str) -> Connected {
        self.lock()
            .entry(daemon_id.to_owned())
            .or_insert(Seen {
                open: 0,
                closed_at: (Instant::now(), unix_ms_now()),
            })
            .open += 1;
        Connected {
            presence: self.clone(),
            daemon_id: daemon_id.to_owned(),
        }
    }

    /// Counts `daemon_id` as known, without a stream since now, unless it was seen already:
    /// a daemon with a test running that never connects after the hub started is missed too.
    fn expect(&self, daemon_id: &str) {
        self.lock().entry(daemon_id.to_owned()).or_insert(Seen {
            open: 0,
            closed_at: (Instant::now(), unix_ms_now()),
        });
    }

    /// Every daemon seen since the hub started: `None` while connected, else when its last
    /// stream closed.
    fn snapshot(&self) -> Vec<(String, Option<Silent>)> {
        self.lock()
            .iter()
            .map(|(id, s)| (id.clone(), (s.open == 0).then_some(s.closed_at)))
            .collect()
    }
}

/// A test as the rules see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestView {
    pub test_id: String,
    pub lab: String,
    pub daemon_id: String,
    pub channel_id: String,
    /// `finished`, `stopped`, `faulted`; `None` while it runs.
    pub outcome: Option<String>,
    pub reason: String,
    /// The first full cycle and its discharge capacity, and the last full one's, when it has
    /// two.
    pub retention: Option<((u32, f64), (u32, f64))>,
}

/// When a daemon's last upload stream closed: the instant, and the Unix ms that names the
/// silence in its alert's key.
pub type Silent = (Instant, i64);

/// What the hub looks like at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub tests: Vec<TestView>,
    /// Every daemon seen since the hub started, its lab, and since when it has had no stream
    /// (`None`: connected).
    pub daemons: Vec<(String, String, Option<Silent>)>,
}

/// The hub's rules and what they remember between observations.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<AlertRule>,
    /// Targets a rule without `send_to` uses: every one configured.
    all_targets: Vec<Target>,
    /// Keys raised in this process (the store dedupes across restarts).
    raised: HashSet<String>,
    /// Tests ended before the first observation: an alerts file added to a hub full of old
    /// tests does not announce them all.
    ended_before: Option<HashSet<String>>,
}

impl Engine {
    pub fn new(rules: Vec<AlertRule>, all_targets: Vec<Target>) -> Engine {
        Engine {
            rules,
            all_targets,
            raised: HashSet::new(),
            ended_before: None,
        }
    }

    /// Takes the tests `o` shows ended as old news: an alerts file added to a hub full of
    /// ended tests does not announce them all.
    pub fn prime(&mut self, o: &Observation) {
        self.ended_before = Some(
            o.tests
                .iter()
                .filter(|t| t.outcome.is_some())
                .map(|t| t.test_id.clone())
                .collect(),
        );
    }

    /// The alerts `o` raises that were not raised before (the first observation only primes,
    /// unless [`Engine::prime`] did).
    pub fn observe(&mut self, o: &Observation, now: Instant, unix_ms: i64) -> Vec<Raised> {
        let ended_before = self.ended_before.get_or_insert_with(|| {
            o.tests
                .iter()
                .filter(|t| t.outcome.is_some())
                .map(|t| t.test_id.clone())
                .collect()
        });
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let targets = if rule.send_to.is_empty() {
                self.all_targets.clone()
            } else {
                rule.send_to.clone()
            };
            let watched = |lab: &str| rule.labs.is_empty() || rule.labs.iter().any(|l| l == lab);
            let mut raise = |key: String, channel: &str, test_id: &str, reason: &str, text| {
                let key = format!("hub/{}/{key}#{i}", rule.kind.name());
                if self.raised.insert(key.clone()) {
                    out.push(Raised {
                        kind: rule.kind,
                        key,
                        channel: channel.to_owned(),
                        test_id: test_id.to_owned(),
                        reason: reason.to_owned(),
                        text,
                        targets: targets.clone(),
                        raised_unix_ms: unix_ms,
                    });
                }
            };
            for t in o.tests.iter().filter(|t| watched(&t.lab)) {
                let where_ = format!("{}/{}", t.daemon_id, t.channel_id);
                match (rule.kind, t.outcome.as_deref()) {
                    (AlertKind::TestEnded, Some(outcome @ ("finished" | "stopped")))
                    | (AlertKind::TestFaulted, Some(outcome @ "faulted"))
                        if !ended_before.contains(&t.test_id) =>
                    {
                        let why = if t.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", t.reason)
                        };
                        let text = format!("test {} on {where_} {outcome}{why}", t.test_id);
                        raise(t.test_id.clone(), &where_, &t.test_id, &t.reason, text);
                    }
                    (AlertKind::CapacityRetention, _) => {
                        let below = rule.below.unwrap_or(DEFAULT_BELOW);
                        let Some(((first, reference), (last, ah))) = t.retention else {
                            continue;
                        };
                        if last <= first || !ah.is_finite() || ah >= below * reference {
                            continue;
                        }
                        let text = format!(
                            "test {} on {where_}: cycle {last} discharged {ah:.4} Ah, {:.1} % of \
                             cycle {first}'s {reference:.4} Ah (alert under {:.1} %)",
                            t.test_id,
                            ah * 100.0 / reference,
                            below * 100.0
                        );
                        raise(
                            format!("{}/{below}", t.test_id),
                            &where_,
                            &t.test_id,
                            "",
                            text,
                        );
                    }
                    _ => {}
                }
            }
            if rule.kind == AlertKind::DaemonOffline {
                let after = Duration::from_secs(rule.after_s.unwrap_or(DEFAULT_AFTER_S));
                for (daemon, lab, since) in &o.daemons {
                    let Some((at, at_unix_ms)) = since else {
                        continue;
                    };
                    if !watched(lab) || now.saturating_duration_since(*at) < after {
                        continue;
                    }
                    let text = format!(
                        "daemon {daemon}{} has not uploaded for {} s",
                        if lab.is_empty() {
                            String::new()
                        } else {
                            format!(" of lab {lab}")
                        },
                        now.saturating_duration_since(*at).as_secs()
                    );
                    raise(format!("{daemon}/{at_unix_ms}"), daemon, "", "", text);
                }
            }
        }
        out
    }
}

/// The hub's alert service: its rules over a [`Delivery`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct HubAlerts {
    delivery: Delivery,
    rules: Vec<AlertRule>,
    /// How often the store is looked at.
    check_interval: Duration,
}

impl HubAlerts {
    /// Opens the alert store (`store_path` of the file, else `alerts.sqlite` beside a SQLite
    /// database `db`; created private) and reads the secrets; `None` without rules. `name`
    /// names the hub in what receivers see.
    pub fn open(
        section: &AlertsSection,
        db: &str,
        name: &str,
    ) -> anyhow::Result<Option<HubAlerts>> {
        if section.rules.is_empty() {
            return Ok(None);
        }
        let store_path = match (&section.store_path, crate::store::is_postgres_url(db)) {
            (Some(path), _) => path.clone(),
            (None, false) => Path::new(db).with_file_name("alerts.sqlite"),
            (None, true) => anyhow::bail!(
                "the alerts file needs alerts.store_path with a PostgreSQL database: the file \
                 where raised alerts wait for delivery (on this machine, private)"
            ),
        };
        let store_path = store_path.as_path();
        let origin = Origin {
            daemon: name.to_owned(),
            lab: String::new(),
        };
        Ok(Some(HubAlerts {
            delivery: Delivery::open(section, store_path, origin)?,
            rules: section.rules.clone(),
            check_interval: Duration::from_millis(section.check_interval_ms.unwrap_or(10_000)),
        }))
    }

    /// The newest alerts, newest first, with their deliveries.
    pub fn recent(&self) -> Vec<AlertView> {
        self.delivery.recent()
    }

    /// Takes a first look at `store` (what ended before is not news), then spawns the task
    /// that looks at it and `presence` every `check_interval_ms` and delivers what the rules
    /// raise, until `stop`. Awaited before the hub serves, so no upload can slip before the
    /// first look.
    pub async fn start(
        self,
        store: HubStore,
        presence: Presence,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut engine = Engine::new(self.rules.clone(), self.delivery.targets());
        let (s, p) = (store.clone(), presence.clone());
        match tokio::task::spawn_blocking(move || observe(&s, &p, false)).await {
            Ok(Ok(o)) => engine.prime(&o),
            Ok(Err(e)) => tracing::warn!("alerts: cannot read the hub database: {e}"),
            Err(e) => tracing::error!("alerts: {e}"),
        }
        tokio::spawn(self.run(engine, store, presence, stop))
    }

    async fn run(
        self,
        mut engine: Engine,
        store: HubStore,
        presence: Presence,
        mut stop: watch::Receiver<bool>,
    ) {
        let delivery = tokio::spawn(self.delivery.clone().deliver(stop.clone()));
        let retention = self
            .rules
            .iter()
            .any(|r| r.kind == AlertKind::CapacityRetention);
        let mut tick = tokio::time::interval(self.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let s = store.clone();
            let p = presence.clone();
            let looked = tokio::task::spawn_blocking(move || observe(&s, &p, retention)).await;
            match looked {
                Ok(Ok(o)) => {
                    let raised = engine.observe(&o, Instant::now(), unix_ms_now());
                    self.delivery.raise(&raised);
                }
                Ok(Err(e)) => tracing::warn!("alerts: cannot read the hub database: {e}"),
                Err(e) => tracing::error!("alerts: {e}"),
            }
        }
        let _ = delivery.await;
    }
}

/// What the rules look at, read from the store. Blocking.
fn observe(
    store: &HubStore,
    presence: &Presence,
    retention: bool,
) -> Result<Observation, crate::store::StoreError> {
    let labs = store.daemon_labs()?;
    let lab_of = |daemon: &str| labs.get(daemon).cloned().unwrap_or_default();
    let mut tests = Vec::new();
    for t in store.list_tests()? {
        if t.outcome.is_none() {
            // Its daemon should be uploading.
            presence.expect(&t.daemon_id);
        }
        let retention = match (retention, t.outcome.is_none()) {
            (true, true) => {
                let cycles = store.cycles(&t.test_id)?;
                let first = first_full(&cycles);
                let last = cycles.iter().rev().find(|c| c.complete && c.is_full());
                first.zip(last).map(|(f, l)| {
                    (
                        (f.cycle, f.discharge_capacity_ah),
                        (l.cycle, l.discharge_capacity_ah),
                    )
                })
            }
            _ => None,
        };
        tests.push(TestView {
            lab: lab_of(&t.daemon_id),
            test_id: t.test_id,
            daemon_id: t.daemon_id,
            channel_id: t.channel_id,
            outcome: t.outcome,
            reason: t.reason.unwrap_or_default(),
            retention,
        });
    }
    let daemons = presence
        .snapshot()
        .into_iter()
        .map(|(id, since)| {
            let lab = lab_of(&id);
            (id, lab, since)
        })
        .collect();
    Ok(Observation { tests, daemons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: AlertKind) -> AlertRule {
        AlertRule::of(kind)
    }

    fn test(id: &str, lab: &str, outcome: Option<&str>) -> TestView {
        TestView {
            test_id: id.into(),
            lab: lab.into(),
            daemon_id: "pc-1".into(),
            channel_id: "psb/1".into(),
            outcome: outcome.map(Into::into),
            ..Default::default()
        }
    }

    fn tests(t: Vec<TestView>) -> Observation {
        Observation {
            tests: t,
            daemons: Vec::new(),
        }
    }

    #[test]
    fn tests_ended_before_the_first_look_are_old_news_and_a_new_end_is_announced_once() {
        let mut e = Engine::new(
            vec![rule(AlertKind::TestEnded), rule(AlertKind::TestFaulted)],
            vec![Target::Webhook],
        );
        let now = Instant::now();
        let old = test("t-old", "a", Some("finished"));
        assert!(e.observe(&tests(vec![old.clone()]), now, 0).is_empty());
        let o = tests(vec![
            old,
            test("t-run", "a", None),
            test("t-new", "a", Some("faulted")),
            test("t-done", "b", Some("stopped")),
        ]);
        let raised = e.observe(&o, now, 5);
        let kinds: Vec<_> = raised
            .iter()
            .map(|r| (r.kind, r.test_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (AlertKind::TestEnded, "t-done"),
                (AlertKind::TestFaulted, "t-new")
            ]
        );
        assert_eq!(raised[0].channel, "pc-1/psb/1");
        assert!(e.observe(&o, now, 6).is_empty());
    }

    #[test]
    fn a_rule_with_labs_watches_only_those_labs() {
        let mut r = rule(AlertKind::TestFaulted);
        r.labs = vec!["cathodes".into()];
        let mut e = Engine::new(vec![r], vec![Target::Email]);
        let now = Instant::now();
        e.prime(&tests(Vec::new()));
        let o = tests(vec![
            test("t1", "anodes", Some("faulted")),
            test("t2", "cathodes", Some("faulted")),
        ]);
        let raised = e.observe(&o, now, 0);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].test_id, "t2");
        assert_eq!(raised[0].targets, [Target::Email]);
    }

    #[test]
    fn a_silent_daemon_is_announced_once_per_silence_after_after_s() {
        let mut r = rule(AlertKind::DaemonOffline);
        r.after_s = Some(60);
        let mut e = Engine::new(vec![r], vec![Target::Webhook]);
        let t0 = Instant::now();
        let silent = |since: Instant, ms: i64| Observation {
            tests: Vec::new(),
            daemons: vec![("pc-7".into(), "cathodes".into(), Some((since, ms)))],
        };
        assert!(
            e.observe(&silent(t0, 1000), t0 + Duration::from_secs(59), 0)
                .is_empty()
        );
        let raised = e.observe(&silent(t0, 1000), t0 + Duration::from_secs(61), 0);
        assert_eq!(raised.len(), 1);
        assert!(
            raised[0]
                .text
                .contains("pc-7 of lab cathodes has not uploaded for 61 s")
        );
        assert!(
            e.observe(&silent(t0, 1000), t0 + Duration::from_secs(600), 0)
                .is_empty()
        );
        // Connected again, then silent again: a new episode, a new alert.
        let connected = Observation {
            tests: Vec::new(),
            daemons: vec![("pc-7".into(), "cathodes".into(), None)],
        };
        assert!(
            e.observe(&connected, t0 + Duration::from_secs(700), 0)
                .is_empty()
        );
        let t1 = t0 + Duration::from_secs(800);
        let again = e.observe(&silent(t1, 9000), t1 + Duration::from_secs(61), 0);
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn retention_compares_the_last_full_cycle_with_the_first() {
        let mut e = Engine::new(
            vec![rule(AlertKind::CapacityRetention)],
            vec![Target::Webhook],
        );
        let now = Instant::now();
        e.prime(&tests(Vec::new()));
        let at = |last: (u32, f64)| {
            let mut t = test("t1", "a", None);
            t.retention = Some(((1, 2.0), last));
            tests(vec![t])
        };
        assert!(e.observe(&at((50, 1.61)), now, 0).is_empty());
        let raised = e.observe(&at((51, 1.59)), now, 0);
        assert_eq!(raised.len(), 1);
        assert!(raised[0].text.contains("79.5 %"), "{}", raised[0].text);
        assert!(e.observe(&at((52, 1.5)), now, 0).is_empty());
    }

    #[test]
    fn presence_counts_a_daemon_connected_while_any_of_its_streams_is_open() {
        let p = Presence::default();
        let a = p.connected("pc-1");
        let b = p.connected("pc-1");
        drop(a);
        assert_eq!(p.snapshot()[0].1, None);
        drop(b);
        assert!(p.snapshot()[0].1.is_some());
        p.expect("pc-1");
        p.expect("pc-2");
        assert_eq!(p.snapshot().len(), 2);
    }
}
