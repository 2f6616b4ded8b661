//! The monitor's pages (askama templates in `daemon/templates/web/`, HTML-escaped) and the
//! view of a channel they show. The same view goes to the browser as JSON on the event
//! stream, so a live update shows exactly what a fresh page would.

use crate::proto::control::ChannelSnapshot;
use askama::Template;
use serde::Serialize;
use std::time::Duration;

/// One channel as the pages show it: text already formatted, plus the raw numbers the plots
/// need.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// `DEVICE/N`.
    pub channel: String,
    /// The link to its page (`/channel/DEVICE/N`).
    pub href: String,
    /// idle, running, paused, finished, stopped, faulted, interrupted, offline.
    pub state: String,
    /// The protocol step, as the protocol says it (e.g. "Charge at 1C until 4.2 V").
    pub step: String,
    /// The cycle number, or empty with no test.
    pub cycle: String,
    /// Cell voltage, V with 3 decimals, or "–" when not known.
    pub voltage: String,
    /// Current, A with 3 decimals (positive charging).
    pub current: String,
    /// Cell temperature, °C, or "–" without a sensor.
    pub temperature: String,
    /// Charge and discharge capacity of the test so far, Ah.
    pub capacity: String,
    /// Air temperature of the chamber the cell sits in, or "–".
    pub chamber: String,
    /// Why the channel is offline, stopped or faulted; empty otherwise.
    pub reason: String,
    /// The running (or last) test's id; empty with none.
    pub test_id: String,
    /// The cell under test.
    pub cell_id: String,
    /// The protocol's name.
    pub protocol: String,
    /// Samples the test has, so a page knows a new one came.
    pub samples: u64,
    /// Test time (s) of the last sample, for the plots.
    pub t: f64,
    /// Voltage (V) of the last sample, for the plots (null when not known).
    pub v: f64,
    /// Current (A) of the last sample, for the plots.
    pub i: f64,
    /// Cell temperature (°C) of the last sample, for the plots (null without a sensor).
    pub temp: f64,
    /// The last finished cycle (0: none yet), for the cycle table.
    pub last_full_cycle: u32,
    /// Its discharge capacity (Ah).
    pub last_full_discharge_ah: f64,
    /// Its coulombic efficiency (a fraction).
    pub last_full_coulombic_efficiency: f64,
    /// Whether a test runs (or is paused) on it: the stop button shows then.
    pub active: bool,
}

fn number(value: f64, decimals: usize, unit: &str) -> String {
    if value.is_finite() {
        format!("{value:.decimals$} {unit}")
    } else {
        "–".into()
    }
}

impl ChannelView {
    pub fn of(s: &ChannelSnapshot) -> ChannelView {
        let has_test = !s.test_id.is_empty();
        ChannelView {
            channel: s.channel_id.clone(),
            href: format!("/channel/{}", s.channel_id),
            state: s.state.clone(),
            step: s.step_description.clone(),
            cycle: if has_test {
                s.cycle.to_string()
            } else {
                String::new()
            },
            voltage: number(s.voltage_v, 3, "V"),
            current: number(s.current_a, 3, "A"),
            temperature: number(s.temperature_c, 1, "°C"),
            capacity: if has_test {
                format!(
                    "{:.3} / {:.3} Ah",
                    s.charge_capacity_ah, s.discharge_capacity_ah
                )
            } else {
                String::new()
            },
            chamber: number(s.ambient_temperature_c, 1, "°C"),
            reason: s.reason.clone(),
            test_id: s.test_id.clone(),
            cell_id: s.cell_id.clone(),
            protocol: s.protocol_name.clone(),
            samples: s.samples,
            t: s.test_time_s,
            v: s.voltage_v,
            i: s.current_a,
            temp: s.temperature_c,
            last_full_cycle: s.last_full_cycle,
            last_full_discharge_ah: s.last_full_discharge_ah,
            last_full_coulombic_efficiency: s.last_full_coulombic_efficiency,
            active: s.state == "running" || s.state == "paused",
        }
    }
}

/// What every page's header shows.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The daemon's id, to tell labs apart.
    pub daemon_id: String,
    /// Who signed in (token name and role), or empty on an open monitor.
    pub who: String,
    /// Whether the monitor needs a sign-in (so a sign-out button shows).
    pub signed: bool,
}

/// The lab overview: every channel live.
#[derive(Template)]
#[template(path = "web/overview.html")]
pub struct Overview {
    /// The page header's facts.
    pub chrome: Chrome,
    /// Every channel in the configuration's order.
    pub channels: Vec<ChannelView>,
    /// The daemon's alarms (outbox, chambers, devices).
    pub alarms: Vec<String>,
    /// The newest alerts and how their delivery went (`[alerts]`), newest first.
    pub alerts: Vec<String>,
    /// "connected" or why not, for the hub line.
    pub hub: String,
}

/// One channel: live plots, its cycle table, and the stop form.
#[derive(Template)]
#[template(path = "web/channel.html")]
pub struct ChannelPage {
    /// The page header's facts.
    pub chrome: Chrome,
    /// The channel now.
    pub c: ChannelView,
    /// An error from the last stop, shown above the form.
    pub error: String,
}

/// The start form (again with the values and the error after a refused start).
#[derive(Template)]
#[template(path = "web/start.html")]
pub struct StartPage {
    /// The page header's facts.
    pub chrome: Chrome,
    /// The channel the test is for.
    pub channel: String,
    /// Its page.
    pub href: String,
    /// The protocol library's names, for the select.
    pub library: Vec<String>,
    /// What the form held (empty on a new form).
    pub form: super::forms::StartForm,
    /// Why the start was refused; empty on a new form.
    pub error: String,
}

/// The sign-in form.
#[derive(Template)]
#[template(path = "web/signin.html")]
pub struct SignIn {
    /// Why the last sign-in failed, or why one is needed.
    pub error: String,
    /// Where to go after signing in (a path on this monitor).
    pub next: String,
}

/// A page saying what went wrong (refused, not found).
#[derive(Template)]
#[template(path = "web/message.html")]
pub struct Message {
    /// The page's title.
    pub title: String,
    /// What happened and what to do.
    pub text: String,
}

/// How often the daemon's alarms and hub connection are sent.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The daemon-wide part of the overview.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The daemon's alarms.
    pub alarms: Vec<String>,
    /// The newest alerts (`[alerts]`) and how their delivery went, newest first.
    pub alerts: Vec<String>,
    /// "connected", or what the daemon does without its hub.
    pub hub: String,
}

impl StatusView {
    pub fn of(daemon: &crate::daemon::Daemon) -> StatusView {
        let status = daemon.status();
        StatusView {
            alarms: status.alarms,
            alerts: status.alerts.iter().map(crate::alerts::line).collect(),
            hub: hub_text(status.hub_connected, status.backlog_entries),
        }
    }
}

/// The hub line: connected, or how much waits for it.
pub fn hub_text(connected: bool, backlog: u64) -> String {
    if connected {
        "connected".into()
    } else {
        format!("not connected ({backlog} entries wait in the outbox)")
    }
}
