//! The rules against what the daemon sees, with no I/O: an [`Observation`] in, the alerts it
//! raises out. Conditions that must last (offline, unreachable) are timed on the instants given,
//! so tests move time by hand.

use crate::config::alerts::{
    AlertKind, AlertRule, DEFAULT_AFTER_S, DEFAULT_BELOW, DEFAULT_PERCENT, Target,
};
use crate::proto::control::ChannelSnapshot;
pub use cyclerd_alerts::Raised;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// What the daemon looks like at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Every channel's latest snapshot.
    pub channels: Vec<ChannelSnapshot>,
    /// Every chamber by name, with why it is unsafe while it is.
    pub chambers: Vec<(String, Option<String>)>,
    /// Whether the uploader has a stream to the hub, and its last error when not.
    pub hub_connected: bool,
    pub hub_error: String,
    /// Bytes waiting for the hub, and `store.max_bytes`.
    pub outbox_pending_bytes: u64,
    pub outbox_quota: Option<u64>,
}

/// The rules and what they remember between observations.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<AlertRule>,
    /// Targets a rule without `send_to` uses: every one configured.
    all_targets: Vec<Target>,
    /// When each lasting condition (by name) started: the instant, and the Unix ms that names
    /// the episode in its key.
    since: HashMap<String, (Instant, i64)>,
    /// Keys raised already in this process (the store dedupes across restarts).
    raised: HashSet<String>,
    /// Each test's first full cycle and its discharge capacity (Ah): retention's reference.
    baselines: HashMap<String, (u32, f64)>,
}

impl Engine {
    pub fn new(rules: Vec<AlertRule>, all_targets: Vec<Target>) -> Engine {
        Engine {
            rules,
            all_targets,
            since: HashMap::new(),
            raised: HashSet::new(),
            baselines: HashMap::new(),
        }
    }

    /// A test's retention reference (kept in the store so a restart keeps the first cycle's).
    pub fn set_baseline(&mut self, test_id: &str, cycle: u32, discharge_ah: f64) {
        self.baselines
            .insert(test_id.to_string(), (cycle, discharge_ah));
    }

    /// References that this observation set for the first time, for the store.
    pub fn baselines(&self) -> &HashMap<String, (u32, f64)> {
        &self.baselines
    }

    /// The alerts `o` raises at `now` (`unix_ms` on the wall clock).
    pub fn observe(&mut self, o: &Observation, now: Instant, unix_ms: i64) -> Vec<Raised> {
        // References first, so a test's first full cycle is kept whatever the rules say.
        for c in &o.channels {
            if !c.test_id.is_empty()
                && c.last_full_cycle > 0
                && c.last_full_discharge_ah.is_finite()
                && c.last_full_discharge_ah > 0.0
            {
                self.baselines
                    .entry(c.test_id.clone())
                    .or_insert((c.last_full_cycle, c.last_full_discharge_ah));
            }
        }
        let mut out = Vec::new();
        let mut lasting = HashSet::new();
        for (i, rule) in self.rules.clone().iter().enumerate() {
            for mut r in self.rule(i, rule, o, now, unix_ms, &mut lasting) {
                if self.raised.insert(r.key.clone()) {
                    r.targets = if rule.send_to.is_empty() {
                        self.all_targets.clone()
                    } else {
                        rule.send_to.clone()
                    };
                    out.push(r);
                }
            }
        }
        // A condition that no longer holds starts a new episode when it comes back.
        self.since.retain(|name, _| lasting.contains(name));
        out
    }

    /// Starts or continues the condition `name`; its episode once it has lasted `after`.
    fn lasted(
        &mut self,
        name: String,
        after: Duration,
        now: Instant,
        unix_ms: i64,
        lasting: &mut HashSet<String>,
    ) -> Option<i64> {
        lasting.insert(name.clone());
        let (start, episode) = *self.since.entry(name).or_insert((now, unix_ms));
        (now.duration_since(start) >= after).then_some(episode)
    }

    fn rule(
        &mut self,
        i: usize,
        rule: &AlertRule,
        o: &Observation,
        now: Instant,
        unix_ms: i64,
        lasting: &mut HashSet<String>,
    ) -> Vec<Raised> {
        let kind = rule.kind;
        let after = Duration::from_secs(rule.after_s.unwrap_or(DEFAULT_AFTER_S));
        let watched =
            |name: &str| rule.channels.is_empty() || rule.channels.iter().any(|c| c == name);
        let raised =
            |key: String, channel: &str, test_id: &str, reason: &str, text: String| Raised {
                kind,
                key: format!("{}/{key}#{i}", kind.name()),
                channel: channel.into(),
                test_id: test_id.into(),
                reason: reason.into(),
                text,
                targets: Vec::new(),
                raised_unix_ms: unix_ms,
            };
        let mut out = Vec::new();
        match kind {
            AlertKind::TestEnded | AlertKind::TestFaulted => {
                for c in o.channels.iter().filter(|c| watched(&c.channel_id)) {
                    let said = match (kind, c.state.as_str()) {
                        (AlertKind::TestEnded, "finished") => "finished",
                        (AlertKind::TestEnded, "stopped") => "was stopped",
                        (AlertKind::TestFaulted, "faulted") => "faulted",
                        _ => continue,
                    };
                    if c.test_id.is_empty() {
                        continue;
                    }
                    let mut text = format!("test {} on {} {said}", c.test_id, c.channel_id);
                    if !c.cell_id.is_empty() {
                        text.push_str(&format!(" (cell {})", c.cell_id));
                    }
                    if !c.reason.is_empty() {
                        text.push_str(&format!(": {}", c.reason));
                    }
                    out.push(raised(
                        c.test_id.clone(),
                        &c.channel_id,
                        &c.test_id,
                        &c.reason,
                        text,
                    ));
                }
            }
            // The hub's rule; the configuration refuses it here.
            AlertKind::DaemonOffline => {}
            AlertKind::ChannelOffline => {
                for c in o.channels.iter().filter(|c| watched(&c.channel_id)) {
                    if c.state != "offline" {
                        continue;
                    }
                    let name = format!("offline/{}", c.channel_id);
                    if let Some(episode) = self.lasted(name, after, now, unix_ms, lasting) {
                        let text = format!(
                            "channel {} has been offline for over {} s: {}",
                            c.channel_id,
                            after.as_secs(),
                            c.reason
                        );
                        out.push(raised(
                            format!("{}/{episode}", c.channel_id),
                            &c.channel_id,
                            &c.test_id,
                            &c.reason,
                            text,
                        ));
                    }
                }
            }
            AlertKind::HubUnreachable => {
                if !o.hub_connected
                    && let Some(episode) = self.lasted("hub".into(), after, now, unix_ms, lasting)
                {
                    let text = format!(
                        "the hub has been unreachable for over {} s: {}",
                        after.as_secs(),
                        o.hub_error
                    );
                    out.push(raised(episode.to_string(), "", "", &o.hub_error, text));
                }
            }
            AlertKind::OutboxFull => {
                let percent = rule.percent.unwrap_or(DEFAULT_PERCENT);
                if let Some(quota) = o.outbox_quota.filter(|q| *q > 0) {
                    let fill = o.outbox_pending_bytes as f64 * 100.0 / quota as f64;
                    if fill >= percent
                        && let Some(episode) =
                            self.lasted("outbox".into(), Duration::ZERO, now, unix_ms, lasting)
                    {
                        let text = format!(
                            "the outbox holds {fill:.0} % of store.max_bytes waiting for the hub \
                             (alert at {percent} %); stepped channels pause at 100 %"
                        );
                        out.push(raised(episode.to_string(), "", "", "", text));
                    }
                }
            }
            AlertKind::ChamberAlarm => {
                for (name, fault) in o.chambers.iter().filter(|(n, _)| watched(n)) {
                    let Some(fault) = fault else { continue };
                    let condition = format!("chamber/{name}");
                    if let Some(episode) =
                        self.lasted(condition, Duration::ZERO, now, unix_ms, lasting)
                    {
                        let text = format!("chamber {name}: {fault}");
                        out.push(raised(format!("{name}/{episode}"), name, "", fault, text));
                    }
                }
            }
            AlertKind::CapacityRetention => {
                let below = rule.below.unwrap_or(DEFAULT_BELOW);
                for c in o.channels.iter().filter(|c| watched(&c.channel_id)) {
                    let Some(&(first, reference)) = self.baselines.get(&c.test_id) else {
                        continue;
                    };
                    let ah = c.last_full_discharge_ah;
                    if c.last_full_cycle <= first || !ah.is_finite() || ah >= below * reference {
                        continue;
                    }
                    let text = format!(
                        "test {} on {}: cycle {} discharged {ah:.4} Ah, {:.1} % of cycle {first}'s \
                         {reference:.4} Ah (alert under {:.1} %)",
                        c.test_id,
                        c.channel_id,
                        c.last_full_cycle,
                        ah * 100.0 / reference,
                        below * 100.0
                    );
                    out.push(raised(
                        format!("{}/{below}", c.test_id),
                        &c.channel_id,
                        &c.test_id,
                        "",
                        text,
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: AlertKind) -> AlertRule {
        AlertRule::of(kind)
    }

    fn channel(id: &str, state: &str, test_id: &str) -> ChannelSnapshot {
        ChannelSnapshot {
            channel_id: id.into(),
            state: state.into(),
            test_id: test_id.into(),
            ..Default::default()
        }
    }

    fn engine(rules: Vec<AlertRule>) -> Engine {
        Engine::new(rules, vec![Target::Webhook, Target::Email])
    }

    #[test]
    fn a_faulted_test_raises_one_alert_with_its_reason_however_often_it_is_seen() {
        let mut e = engine(vec![rule(AlertKind::TestFaulted)]);
        let mut c = channel("psb1/1", "faulted", "t1");
        c.reason = "voltage 4.31 V above limit 4.25 V".into();
        let o = Observation {
            channels: vec![c, channel("psb1/2", "running", "t2")],
            hub_connected: true,
            ..Default::default()
        };
        let now = Instant::now();
        let first = e.observe(&o, now, 1000);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].kind, AlertKind::TestFaulted);
        assert_eq!(first[0].test_id, "t1");
        assert!(
            first[0].text.contains("faulted: voltage 4.31 V"),
            "{}",
            first[0].text
        );
        assert_eq!(first[0].targets, vec![Target::Webhook, Target::Email]);
        assert!(e.observe(&o, now, 2000).is_empty());
    }

    #[test]
    fn a_finished_test_raises_test_ended_but_not_test_faulted() {
        let mut e = engine(vec![
            rule(AlertKind::TestEnded),
            rule(AlertKind::TestFaulted),
        ]);
        let o = Observation {
            channels: vec![channel("a/1", "finished", "t1")],
            ..Default::default()
        };
        let raised = e.observe(&o, Instant::now(), 0);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].kind, AlertKind::TestEnded);
    }

    #[test]
    fn a_rule_for_some_channels_ignores_the_others() {
        let mut r = rule(AlertKind::TestFaulted);
        r.channels = vec!["a/2".into()];
        r.send_to = vec![Target::Email];
        let mut e = engine(vec![r]);
        let o = Observation {
            channels: vec![
                channel("a/1", "faulted", "t1"),
                channel("a/2", "faulted", "t2"),
            ],
            ..Default::default()
        };
        let raised = e.observe(&o, Instant::now(), 0);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].channel, "a/2");
        assert_eq!(raised[0].targets, vec![Target::Email]);
    }

    #[test]
    fn an_offline_channel_raises_only_after_it_stayed_offline_for_after_s() {
        let mut r = rule(AlertKind::ChannelOffline);
        r.after_s = Some(60);
        let mut e = engine(vec![r]);
        let offline = Observation {
            channels: vec![channel("a/1", "offline", "")],
            ..Default::default()
        };
        let online = Observation {
            channels: vec![channel("a/1", "idle", "")],
            ..Default::default()
        };
        let t0 = Instant::now();
        assert!(e.observe(&offline, t0, 0).is_empty());
        assert!(
            e.observe(&offline, t0 + Duration::from_secs(59), 0)
                .is_empty()
        );
        // Back before the minute: the next outage starts counting again.
        assert!(
            e.observe(&online, t0 + Duration::from_secs(59), 0)
                .is_empty()
        );
        assert!(
            e.observe(&offline, t0 + Duration::from_secs(61), 61_000)
                .is_empty()
        );
        let raised = e.observe(&offline, t0 + Duration::from_secs(121), 121_000);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].key, "channel_offline/a/1/61000#0");
        assert!(
            e.observe(&offline, t0 + Duration::from_secs(500), 0)
                .is_empty()
        );
    }

    #[test]
    fn an_unreachable_hub_raises_once_per_outage() {
        let mut r = rule(AlertKind::HubUnreachable);
        r.after_s = Some(10);
        let mut e = engine(vec![r]);
        let down = Observation {
            hub_error: "connection refused".into(),
            ..Default::default()
        };
        let up = Observation {
            hub_connected: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(e.observe(&down, t0, 0).is_empty());
        assert_eq!(e.observe(&down, t0 + s(10), 10).len(), 1);
        assert!(e.observe(&down, t0 + s(20), 20).is_empty());
        assert!(e.observe(&up, t0 + s(30), 30).is_empty());
        assert!(e.observe(&down, t0 + s(40), 40).is_empty());
        let again = e.observe(&down, t0 + s(50), 50);
        assert_eq!(again.len(), 1);
        assert!(again[0].text.contains("connection refused"));
    }

    #[test]
    fn the_outbox_raises_at_its_percentage_of_the_quota() {
        let mut r = rule(AlertKind::OutboxFull);
        r.percent = Some(80.0);
        let mut e = engine(vec![r]);
        let mut o = Observation {
            outbox_pending_bytes: 790,
            outbox_quota: Some(1000),
            ..Default::default()
        };
        assert!(e.observe(&o, Instant::now(), 0).is_empty());
        o.outbox_pending_bytes = 800;
        assert_eq!(e.observe(&o, Instant::now(), 1).len(), 1);
    }

    #[test]
    fn a_chamber_alarm_raises_with_the_chambers_words() {
        let mut e = engine(vec![rule(AlertKind::ChamberAlarm)]);
        let o = Observation {
            chambers: vec![
                ("c1".into(), None),
                ("c2".into(), Some("alarm 12: door open".into())),
            ],
            ..Default::default()
        };
        let raised = e.observe(&o, Instant::now(), 0);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].text, "chamber c2: alarm 12: door open");
    }

    #[test]
    fn retention_compares_the_last_full_cycle_with_the_first() {
        let mut r = rule(AlertKind::CapacityRetention);
        r.below = Some(0.8);
        let mut e = engine(vec![r]);
        let at = |cycle: u32, ah: f64| Observation {
            channels: vec![ChannelSnapshot {
                last_full_cycle: cycle,
                last_full_discharge_ah: ah,
                ..channel("a/1", "running", "t1")
            }],
            ..Default::default()
        };
        let now = Instant::now();
        assert!(e.observe(&at(1, 2.0), now, 0).is_empty());
        assert!(e.observe(&at(50, 1.61), now, 0).is_empty());
        let raised = e.observe(&at(51, 1.59), now, 0);
        assert_eq!(raised.len(), 1);
        assert!(raised[0].text.contains("79.5 %"), "{}", raised[0].text);
        assert!(e.observe(&at(52, 1.5), now, 0).is_empty());
        assert_eq!(e.baselines()["t1"], (1, 2.0));
    }

    #[test]
    fn a_kept_reference_survives_a_restart_of_the_engine() {
        let mut e = engine(vec![rule(AlertKind::CapacityRetention)]);
        e.set_baseline("t1", 1, 2.0);
        let o = Observation {
            channels: vec![ChannelSnapshot {
                last_full_cycle: 40,
                last_full_discharge_ah: 1.5,
                ..channel("a/1", "running", "t1")
            }],
            ..Default::default()
        };
        assert_eq!(e.observe(&o, Instant::now(), 0).len(), 1);
    }
}
