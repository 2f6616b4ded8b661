//! `[alerts]`: who is told, and how, when a test ends or faults, a channel or the hub is lost,
//! the outbox fills, a chamber alarms, or a cell's capacity fades; the same section in the
//! daemon's configuration and in the hub's alerts file (lab-wide rules, `daemon_offline`).
//!
//! ```toml
//! [[alerts.rule]]
//! kind = "test_faulted"        # see AlertKind
//! [[alerts.rule]]
//! kind = "channel_offline"
//! after_s = 600
//! [alerts.webhook]
//! url_file = "/etc/cyclerd/webhook-url"   # Slack, Teams and Mattermost incoming webhooks
//! [alerts.email]
//! server = "smtp.lab.example"
//! username = "cyclerd"
//! password_file = "/etc/cyclerd/smtp-password"
//! from = "cyclerd <cyclerd@lab.example>"
//! to = ["oncall@lab.example"]
//! ```

use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// The `[alerts]` section; with no rule, nothing is ever raised.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// `[[alerts.rule]]`: what raises an alert.
    #[serde(default, rename = "rule")]
    pub rules: Vec<AlertRule>,
    /// `[alerts.webhook]`: a JSON POST per alert.
    pub webhook: Option<WebhookConfig>,
    /// `[alerts.email]`: a mail per alert.
    pub email: Option<EmailConfig>,
    /// Where alerts wait until delivered (SQLite, private). Default: `alerts.sqlite` beside the
    /// outbox (`store.path`).
    pub store_path: Option<PathBuf>,
    /// Wall ms between checks of the conditions that last (offline, unreachable, outbox fill);
    /// default 1000. A channel's state change is seen at once.
    pub check_interval_ms: Option<u64>,
    /// Longest wait between delivery attempts of an alert, wall seconds (the wait starts at 1 s
    /// and doubles); default 300.
    pub max_retry_s: Option<u64>,
}

/// What raises an alert.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A test finished, or an operator stopped it.
    TestEnded,
    /// A test faulted: a safety limit tripped, the device stopped answering, its chamber
    /// became unsafe.
    TestFaulted,
    /// A channel's device has not answered for `after_s`.
    ChannelOffline,
    /// The uploader has not reached the hub for `after_s`.
    HubUnreachable,
    /// The outbox holds more than `percent` of `store.max_bytes` waiting for the hub.
    OutboxFull,
    /// A chamber reports an alarm, lost contact, or its air left its limits.
    ChamberAlarm,
    /// A test's last full cycle discharged less than `below` times its first full cycle.
    CapacityRetention,
    /// The hub's: a daemon that uploaded to it has had no upload stream open for `after_s`
    /// (its PC is down, or its network).
    DaemonOffline,
}

impl AlertKind {
    /// As the configuration and the payloads spell it.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::TestEnded => "test_ended",
            AlertKind::TestFaulted => "test_faulted",
            AlertKind::ChannelOffline => "channel_offline",
            AlertKind::HubUnreachable => "hub_unreachable",
            AlertKind::OutboxFull => "outbox_full",
            AlertKind::ChamberAlarm => "chamber_alarm",
            AlertKind::CapacityRetention => "capacity_retention",
            AlertKind::DaemonOffline => "daemon_offline",
        }
    }

    /// Parses [`AlertKind::name`] back (from the alert store).
    pub fn from_name(name: &str) -> Option<AlertKind> {
        [
            AlertKind::TestEnded,
            AlertKind::TestFaulted,
            AlertKind::ChannelOffline,
            AlertKind::HubUnreachable,
            AlertKind::OutboxFull,
            AlertKind::ChamberAlarm,
            AlertKind::CapacityRetention,
            AlertKind::DaemonOffline,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Webhook,
    Email,
}

impl Target {
    /// As the configuration and the store spell it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Webhook => "webhook",
            Target::Email => "email",
        }
    }
}

/// One `[[alerts.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// What raises the alert.
    pub kind: AlertKind,
    /// The channels (`DEVICE/N`) the rule watches (test_*, channel_offline,
    /// capacity_retention); default: all. The chambers (`name`) for chamber_alarm. Daemon only.
    #[serde(default)]
    pub channels: Vec<String>,
    /// The labs the rule watches (test_*, capacity_retention, daemon_offline); default: all.
    /// Hub only.
    #[serde(default)]
    pub labs: Vec<String>,
    /// channel_offline, hub_unreachable, daemon_offline: seconds the condition lasts before the
    /// alert is raised; default 300.
    pub after_s: Option<u64>,
    /// outbox_full: percent of `store.max_bytes`; default 90.
    pub percent: Option<f64>,
    /// capacity_retention: the fraction (0 to 1) of the first full cycle's discharge capacity
    /// under which the alert is raised; default 0.8.
    pub below: Option<f64>,
    /// "webhook", "email"; default: every one configured.
    #[serde(default)]
    pub send_to: Vec<Target>,
}

impl AlertRule {
    /// A rule of `kind` with every setting at its default.
    pub fn of(kind: AlertKind) -> AlertRule {
        AlertRule {
            kind,
            channels: Vec::new(),
            labs: Vec::new(),
            after_s: None,
            percent: None,
            below: None,
            send_to: Vec::new(),
        }
    }
}

/// Default `after_s` of a rule.
pub const DEFAULT_AFTER_S: u64 = 300;
/// Default `percent` of an outbox_full rule.
pub const DEFAULT_PERCENT: f64 = 90.0;
/// Default `below` of a capacity_retention rule.
pub const DEFAULT_BELOW: f64 = 0.8;

/// A value that must never reach a log: its `Debug` says `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[alerts.webhook]`: Slack, Teams and Mattermost incoming webhooks all take the payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The webhook's URL; it holds the webhook's secret, so prefer `url_file` (or the
    /// `CYCLERD__ALERTS__WEBHOOK__URL` environment variable). Never logged.
    pub url: Option<Secret>,
    /// A file holding the URL (readable by the daemon's user only).
    pub url_file: Option<PathBuf>,
    /// PEM file of a private CA the receiver's certificate is signed by; default: the public
    /// web's roots only.
    pub ca_file: Option<PathBuf>,
    /// Wall-time bound on one POST, ms; default 10000.
    pub timeout_ms: Option<u64>,
    /// Allow plain `http://` to another machine (the URL, with its secret, crosses the network
    /// in clear). Default false: beyond loopback the URL must be https.
    #[serde(default)]
    pub insecure: bool,
}

/// How the e-mail connection is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this machine (a loopback `server`).
    None,
}

/// `[alerts.email]`: SMTP submission.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (as its certificate names it) or address.
    pub server: String,
    /// Default 587 (starttls), 465 (tls), 25 (none).
    pub port: Option<u16>,
    /// "starttls" (default), "tls", or "none" for a loopback relay.
    #[serde(default)]
    pub tls: EmailTls,
    /// Login name; with it, `password_file` or `password_env` gives the password.
    pub username: Option<String>,
    /// A file holding the SMTP password (readable by the daemon's user only).
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// PEM file of a private CA the server's certificate is signed by; default: the public
    /// web's roots only.
    pub ca_file: Option<PathBuf>,
    /// The sender, e.g. `cyclerd <cyclerd@lab.example>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Wall-time bound on one SMTP exchange, ms; default 10000.
    pub timeout_ms: Option<u64>,
}

impl EmailConfig {
    /// The port in force.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        })
    }
}

/// Whether `host` (a name or an address) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The kinds only the daemon sees.
const DAEMON_KINDS: [AlertKind; 4] = [
    AlertKind::ChannelOffline,
    AlertKind::HubUnreachable,
    AlertKind::OutboxFull,
    AlertKind::ChamberAlarm,
];

impl AlertsSection {
    /// The daemon's checks, each naming its key; `channels` and `chambers` are the configured
    /// names, `quota` is `store.max_bytes`.
    pub fn validate(
        &self,
        channels: &[&str],
        chambers: &[&str],
        quota: Option<u64>,
    ) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rule[{i}] ({})", r.kind.name());
            if r.kind == AlertKind::DaemonOffline {
                return Err(format!(
                    "{at}: daemon_offline is the hub's rule (a daemon cannot see itself go \
                     silent): put it in the hub's alerts file"
                ));
            }
            if !r.labs.is_empty() {
                return Err(format!(
                    "{at}.labs is for the hub's rules: a daemon watches its own channels"
                ));
            }
            let names: &[&str] = if r.kind == AlertKind::ChamberAlarm {
                chambers
            } else {
                channels
            };
            if let Some(n) = r.channels.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(format!(
                    "{at}.channels names {n:?}, which is not configured"
                ));
            }
            if r.kind == AlertKind::OutboxFull && quota.is_none() {
                return Err(format!(
                    "{at} needs store.max_bytes (the quota it is a percentage of)"
                ));
            }
        }
        self.validate_common()
    }

    /// The hub's checks (`cyclerhub serve --alerts FILE`): lab-wide rules only.
    pub fn validate_for_hub(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rule[{i}] ({})", r.kind.name());
            if DAEMON_KINDS.contains(&r.kind) {
                return Err(format!(
                    "{at}: only a daemon sees this; put the rule in the daemon's configuration \
                     (the hub's rules: test_ended, test_faulted, capacity_retention, \
                     daemon_offline)"
                ));
            }
            if !r.channels.is_empty() {
                return Err(format!(
                    "{at}.channels is for a daemon's rules: the hub's rules take labs"
                ));
            }
        }
        self.validate_common()
    }

    /// What both check: the rules' values, where alerts go, the delivery settings.
    fn validate_common(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rule[{i}] ({})", r.kind.name());
            if r.after_s == Some(0) {
                return Err(format!("{at}.after_s must be at least 1"));
            }
            if let Some(p) = r.percent
                && !(p > 0.0 && p <= 100.0)
            {
                return Err(format!(
                    "{at}.percent must be above 0 and at most 100, not {p}"
                ));
            }
            if let Some(b) = r.below
                && !(b > 0.0 && b < 1.0)
            {
                return Err(format!("{at}.below must be between 0 and 1, not {b}"));
            }
            for t in &r.send_to {
                let configured = match t {
                    Target::Webhook => self.webhook.is_some(),
                    Target::Email => self.email.is_some(),
                };
                if !configured {
                    return Err(format!(
                        "{at}.send_to names {}, but there is no [alerts.{}]",
                        t.name(),
                        t.name()
                    ));
                }
            }
        }
        if !self.rules.is_empty() && self.webhook.is_none() && self.email.is_none() {
            return Err(
                "[[alerts.rule]] is given but neither [alerts.webhook] nor [alerts.email]: say \
                 where alerts go"
                    .into(),
            );
        }
        if self.check_interval_ms == Some(0) {
            return Err("alerts.check_interval_ms must be at least 1".into());
        }
        if self.max_retry_s == Some(0) {
            return Err("alerts.max_retry_s must be at least 1".into());
        }
        if let Some(w) = &self.webhook {
            match (&w.url, &w.url_file) {
                (Some(_), Some(_)) => {
                    return Err("alerts.webhook: give url or url_file, not both".into());
                }
                (None, None) => return Err("alerts.webhook needs url or url_file".into()),
                (Some(url), None) => check_webhook_url(url.expose(), w.insecure)?,
                // Read (and checked) when the daemon starts.
                (None, Some(_)) => {}
            }
        }
        if let Some(e) = &self.email {
            if e.server.trim().is_empty() {
                return Err("alerts.email.server is empty".into());
            }
            if e.tls == EmailTls::None && !is_loopback_host(&e.server) {
                return Err(format!(
                    "alerts.email.tls = \"none\" is only for a relay on this machine; {:?} is \
                     not loopback: use \"starttls\" or \"tls\"",
                    e.server
                ));
            }
            if e.to.is_empty() {
                return Err("alerts.email.to is empty: give at least one recipient".into());
            }
            for (key, address) in
                std::iter::once(("from", &e.from)).chain(e.to.iter().map(|t| ("to", t)))
            {
                address
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|err| format!("alerts.email.{key} {address:?}: {err}"))?;
            }
            if e.password_file.is_some() && e.password_env.is_some() {
                return Err("alerts.email: give password_file or password_env, not both".into());
            }
            if (e.password_file.is_some() || e.password_env.is_some()) != e.username.is_some() {
                return Err(
                    "alerts.email: username and a password (password_file or password_env) go \
                     together"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// A webhook URL must be http(s), and https beyond loopback unless `insecure`. The error never
/// repeats the URL (it holds the webhook's secret).
pub fn check_webhook_url(url: &str, insecure: bool) -> Result<(), String> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| format!("alerts.webhook url is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if insecure || parsed.host_str().is_some_and(is_loopback_host) => Ok(()),
        "http" => Err(
            "alerts.webhook url is plain http to another machine: use https (or \
             alerts.webhook.insecure = true on a network you trust)"
                .into(),
        ),
        other => Err(format!(
            "alerts.webhook url has scheme {other:?}: use https"
        )),
    }
}
