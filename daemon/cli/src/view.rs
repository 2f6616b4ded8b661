//! The live view of the channels, as `cyclerctl status`, `cyclerctl watch` and `cyclerd demo`
//! print it: channels in natural order (`psb2` before `psb10`), each in at most four lines that
//! never pass [`WIDTH`] columns (a longer one is cut with an ellipsis, never wrapped, so a
//! terminal redraw stays in place).
//!
//! ```text
//! psb1/2     running       3:12:05   4.1234 V   +1.2500 A   25.1 °C  air  25.0 °C
//!   4c5d6e7f  NMC-042  Demo cycling › Charge at C/2 until 4.2 V
//!   Ah step 34 +0.512 -0.000  cycle 12 +1.234 -0.000  last 11: -2.401 CE 99.80%
//! psb1/10    idle                    3.6712 V   +0.0000 A
//! ```
//!
//! The first line: channel, state, test time, voltage (the open-circuit voltage of an idle
//! stepped channel; blank when unknown), current, cell temperature and the chamber's air (only
//! for a channel in a chamber). With a test (running or ended), the second: the test id's last
//! eight hex digits, the cell, the protocol and the step's text; the third the step and cycle
//! numbers with their throughput so far, charge `+` and discharge `-` in Ah, then the last full
//! cycle (with both a charge and a discharge): its discharge capacity and coulombic efficiency.
//! Last, why the channel stopped, faulted or is offline, when it says.

use cyclerd::proto::control::{Alert, ChannelSnapshot};
use std::cmp::Ordering;

/// Columns no line passes: an 80-column terminal.
pub const WIDTH: usize = 80;

/// Every channel's lines, the channels in natural order of their ids.
pub fn render<'a>(snapshots: impl IntoIterator<Item = &'a ChannelSnapshot>) -> Vec<String> {
    let mut channels: Vec<&ChannelSnapshot> = snapshots.into_iter().collect();
    channels.sort_by(|a, b| natural_cmp(&a.channel_id, &b.channel_id));
    channels.into_iter().flat_map(channel_lines).collect()
}

/// One channel's lines (see the module's documentation), each at most [`WIDTH`] columns.
pub fn channel_lines(c: &ChannelSnapshot) -> Vec<String> {
    let has_test = !c.test_id.is_empty();
    let mut first = format!(
        "{:<10} {:<11} {:>9} {:>8} V {:+9.4} A",
        fit(&c.channel_id, 10),
        c.state,
        if has_test {
            elapsed(c.test_time_s)
        } else {
            String::new()
        },
        if c.voltage_v.is_finite() {
            format!("{:.4}", c.voltage_v)
        } else {
            "-".into()
        },
        if c.current_a.is_finite() {
            c.current_a
        } else {
            0.0
        },
    );
    if c.temperature_c.is_finite() {
        first.push_str(&format!("  {:5.1} °C", c.temperature_c));
    }
    if c.ambient_temperature_c.is_finite() {
        first.push_str(&format!("  air {:5.1} °C", c.ambient_temperature_c));
    }
    let mut lines = vec![first];
    if has_test {
        let mut who = format!("  {}", short_test_id(&c.test_id));
        for (text, width) in [(&c.cell_id, 14), (&c.protocol_name, 20)] {
            if !text.is_empty() {
                who.push_str("  ");
                who.push_str(&fit(text, width));
            }
        }
        if !c.step_description.is_empty() {
            who.push_str(" › ");
            who.push_str(&c.step_description);
        }
        lines.push(who);
        let mut ah = format!(
            "  Ah step {} {} {}  cycle {} {} {}",
            c.step,
            amp_hours('+', c.step_charge_ah),
            amp_hours('-', c.step_discharge_ah),
            c.cycle,
            amp_hours('+', c.cycle_charge_ah),
            amp_hours('-', c.cycle_discharge_ah),
        );
        if c.last_full_cycle > 0 {
            ah.push_str(&format!(
                "  last {}: {}",
                c.last_full_cycle,
                amp_hours('-', c.last_full_discharge_ah)
            ));
            if c.last_full_coulombic_efficiency.is_finite() {
                ah.push_str(&format!(
                    " CE {:.2}%",
                    100.0 * c.last_full_coulombic_efficiency
                ));
            }
        }
        lines.push(ah);
        if c.quality_findings > 0 {
            lines.push(format!(
                "  quality: {} finding(s), latest {}",
                c.quality_findings, c.last_quality_finding
            ));
        }
    }
    if c.state == "offline" && has_test {
        lines.push(format!("  test {} waits for its device", c.test_id));
    }
    if !c.reason.is_empty() {
        lines.push(format!("  ({})", c.reason));
    }
    lines.into_iter().map(|l| fit(&l, WIDTH)).collect()
}

/// How many delivered alerts `cyclerctl status` shows (every undelivered one is shown).
pub const ALERTS_SHOWN: usize = 5;

/// The newest alerts (newest first, as the daemon sends them) in full, over as many lines as
/// they take: every one not yet delivered, and the newest [`ALERTS_SHOWN`] delivered ones. Each
/// says when it was raised (UTC) and how each target's delivery went.
pub fn alert_lines(alerts: &[Alert]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut delivered = 0;
    for a in alerts {
        let done = a.deliveries.iter().all(|d| d.delivered);
        if done {
            delivered += 1;
            if delivered > ALERTS_SHOWN {
                continue;
            }
        }
        lines.extend(wrap(
            &format!("ALERT    {}", cyclerd::alerts::line(a)),
            "         ",
        ));
    }
    lines
}

/// `text` in at most `width` characters: cut, with an ellipsis, when longer.
pub fn fit(text: &str, width: usize) -> String {
    // One line: a line break in an id or a reason would break the redraw too.
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` over lines of at most [`WIDTH`] columns, broken at spaces, the lines after the first
/// starting with `indent`.
pub fn wrap(text: &str, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    // The line has no word yet.
    let mut fresh = true;
    for word in text.split(' ') {
        if !fresh && line.chars().count() + 1 + word.chars().count() > WIDTH {
            lines.push(std::mem::replace(&mut line, indent.to_string()));
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    lines.push(line);
    lines
}

/// The last eight hex digits of a test id (the random end of a UUIDv7, so tests started the
/// same minute still differ); the whole id when it has fewer.
pub fn short_test_id(test_id: &str) -> String {
    let hex: Vec<char> = test_id.chars().filter(char::is_ascii_hexdigit).collect();
    if hex.len() < 8 {
        return test_id.to_string();
    }
    hex[hex.len() - 8..].iter().collect()
}

/// Test time as H:MM:SS, or days and hours past 100 h.
pub fn elapsed(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0) as u64
    } else {
        0
    };
    let (h, m) = (s / 3600, s / 60 % 60);
    if h < 100 {
        format!("{h}:{m:02}:{:02}", s % 60)
    } else {
        format!("{}d{:02}h{m:02}m", h / 24, h % 24)
    }
}

/// Ampere-hours after `sign` (`+` charge, `-` discharge) in five digits and a point (mAh
/// resolution below 10 Ah); `?` when unknown.
fn amp_hours(sign: char, ah: f64) -> String {
    match ah.abs() {
        a if !a.is_finite() => format!("{sign}?"),
        a if a < 9.9995 => format!("{sign}{a:.3}"),
        a if a < 99.995 => format!("{sign}{a:.2}"),
        a => format!("{sign}{a:.1}"),
    }
}

/// Natural order: runs of digits compare as numbers, the rest as text, so `psb2` comes before
/// `psb10` and `psb1/2` before `psb1/10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.chars().next(), y.chars().next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (n, rest_x) = split_digits(x);
                let (m, rest_y) = split_digits(y);
                let (n0, m0) = (n.trim_start_matches('0'), m.trim_start_matches('0'));
                let order = n0.len().cmp(&m0.len()).then_with(|| n0.cmp(m0));
                if order != Ordering::Equal {
                    return order;
                }
                (x, y) = (rest_x, rest_y);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                (x, y) = (&x[c.len_utf8()..], &y[d.len_utf8()..]);
            }
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> ChannelSnapshot {
        ChannelSnapshot {
            channel_id: "psb1/2".into(),
            state: "running".into(),
            test_id: "0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f".into(),
            cell_id: "NMC-042".into(),
            protocol_name: "Demo cycling".into(),
            step: 34,
            cycle: 12,
            step_description: "Charge at C/2 until 4.2 V".into(),
            voltage_v: 4.1234,
            current_a: 1.25,
            temperature_c: 25.1,
            ambient_temperature_c: 25.0,
            test_time_s: 11_525.0,
            step_charge_ah: 0.512,
            cycle_charge_ah: 1.234,
            last_full_cycle: 11,
            last_full_discharge_ah: 2.401,
            last_full_coulombic_efficiency: 0.998,
            ..Default::default()
        }
    }

    #[test]
    fn a_running_channel_shows_its_test_where_it_is_and_its_throughput() {
        let lines = channel_lines(&running());
        assert_eq!(
            lines,
            [
                "psb1/2     running       3:12:05   4.1234 V   +1.2500 A   25.1 °C  air  25.0 °C",
                "  4c5d6e7f  NMC-042  Demo cycling › Charge at C/2 until 4.2 V",
                "  Ah step 34 +0.512 -0.000  cycle 12 +1.234 -0.000  last 11: -2.401 CE 99.80%",
            ]
        );
    }

    #[test]
    fn a_channel_whose_test_has_quality_findings_shows_how_many_and_the_latest() {
        let mut c = running();
        c.quality_findings = 2;
        c.last_quality_finding =
            "current_sign seq 300..309: current 1 A in a discharge step".into();
        let lines = channel_lines(&c);
        assert!(
            lines[3].starts_with("  quality: 2 finding(s), latest current_sign seq 300..309"),
            "{lines:?}"
        );
        assert!(lines[3].chars().count() <= WIDTH);
    }

    #[test]
    fn an_idle_channel_shows_its_open_circuit_voltage_or_a_blank_and_no_air_outside_a_chamber() {
        let mut idle = ChannelSnapshot {
            channel_id: "psb1/10".into(),
            state: "idle".into(),
            voltage_v: 3.6712,
            temperature_c: f64::NAN,
            ambient_temperature_c: f64::NAN,
            ..Default::default()
        };
        let lines = channel_lines(&idle);
        assert_eq!(
            lines,
            ["psb1/10    idle                    3.6712 V   +0.0000 A"]
        );
        idle.voltage_v = f64::NAN;
        let lines = channel_lines(&idle);
        assert_eq!(
            lines,
            ["psb1/10    idle                         - V   +0.0000 A"]
        );
        assert!(!lines[0].contains("NaN") && !lines[0].contains("air"));
    }

    #[test]
    fn every_line_fits_80_columns_whatever_the_ids_texts_and_numbers() {
        let long = "x".repeat(200);
        let mut c = running();
        c.channel_id = format!("a-very-long-device-name/{long}");
        c.state = "interrupted".into();
        c.cell_id = long.clone();
        c.protocol_name = long.clone();
        c.step_description = long.clone();
        c.reason = format!("the device does not answer: {long}\nsecond line");
        c.cycle = 123_456;
        c.step = 1_234_567;
        c.test_time_s = 1e9;
        c.voltage_v = -12345.678;
        c.current_a = -1234.5678;
        c.temperature_c = -123.4;
        c.ambient_temperature_c = 1234.5;
        c.step_charge_ah = 12345.6;
        c.step_discharge_ah = 99.999;
        c.cycle_charge_ah = 9.9999;
        c.cycle_discharge_ah = f64::NAN;
        c.last_full_cycle = 123_455;
        c.last_full_discharge_ah = 1e6;
        c.last_full_coulombic_efficiency = 1.5;
        let lines = render([&c, &running()]);
        assert_eq!(lines.len(), 7, "{lines:#?}");
        for line in &lines {
            assert!(line.chars().count() <= WIDTH, "{} > 80: {line}", line.len());
            assert!(!line.contains('\n'));
        }
        assert!(
            lines[1].ends_with('…') && lines[3].ends_with('…'),
            "{lines:#?}"
        );
        // The channel id is cut, and its step text; the step's numbers stay in view.
        assert!(lines[0].starts_with("a-very-lo… "), "{lines:#?}");
        assert!(lines[2].starts_with("  Ah step 1234567 +"), "{lines:#?}");
    }

    #[test]
    fn channels_come_in_natural_order() {
        let mut ids = [
            "psb10", "psb1/10", "psb2", "psb1/2", "psb1", "psb1/1", "neware", "psb02",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            [
                "neware", "psb1", "psb1/1", "psb1/2", "psb1/10", "psb02", "psb2", "psb10"
            ]
        );
        let snapshots: Vec<ChannelSnapshot> = ["psb10/1", "psb2/1", "psb1/10", "psb1/2"]
            .into_iter()
            .map(|id| ChannelSnapshot {
                channel_id: id.into(),
                state: "idle".into(),
                ..Default::default()
            })
            .collect();
        let order: Vec<String> = render(&snapshots)
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(order, ["psb1/2", "psb1/10", "psb2/1", "psb10/1"]);
    }

    #[test]
    fn a_long_alarm_wraps_at_spaces_under_its_indent() {
        let alarm = format!("ALARM    {}", "word ".repeat(40).trim_end());
        let lines = wrap(&alarm, "         ");
        assert!(lines.len() > 2, "{lines:#?}");
        assert!(
            lines.iter().all(|l| l.chars().count() <= WIDTH),
            "{lines:#?}"
        );
        assert!(lines[1..].iter().all(|l| l.starts_with("         word")));
        assert_eq!(lines.join(" ").split_whitespace().count(), 41);
    }

    #[test]
    fn test_time_reads_as_hours_minutes_seconds_then_days() {
        assert_eq!(elapsed(0.0), "0:00:00");
        assert_eq!(elapsed(3725.9), "1:02:05");
        assert_eq!(elapsed(99.0 * 3600.0 + 59.0 * 60.0), "99:59:00");
        assert_eq!(
            elapsed(41.0 * 86400.0 + 16.0 * 3600.0 + 40.0 * 60.0),
            "41d16h40m"
        );
        assert_eq!(
            short_test_id("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f"),
            "4c5d6e7f"
        );
        assert_eq!(short_test_id("t1"), "t1");
    }

    #[test]
    fn status_shows_every_undelivered_alert_and_the_newest_delivered_ones_with_their_fate() {
        use cyclerd::proto::control::AlertDelivery;
        let alert = |text: &str, delivered: bool| Alert {
            kind: "test_faulted".into(),
            text: text.into(),
            raised_unix_s: 1_700_000_000.0,
            deliveries: vec![AlertDelivery {
                target: "webhook".into(),
                delivered,
                attempts: 3,
                last_error: if delivered { "" } else { "connection refused" }.into(),
            }],
            ..Default::default()
        };
        let mut alerts = vec![alert("down", false)];
        alerts.extend((0..8).map(|i| alert(&format!("old {i}"), true)));
        alerts.push(alert("older, still pending", false));
        let lines = alert_lines(&alerts);
        let firsts: Vec<&String> = lines.iter().filter(|l| l.starts_with("ALERT")).collect();
        assert_eq!(firsts.len(), 1 + ALERTS_SHOWN + 1, "{lines:#?}");
        assert!(
            lines.iter().all(|l| l.chars().count() <= WIDTH),
            "{lines:#?}"
        );
        let first = lines[..2].join(" ");
        assert_eq!(
            first.split_whitespace().collect::<Vec<_>>().join(" "),
            "ALERT 2023-11-14 22:13 UTC down [webhook NOT SENT after 3 attempts: connection \
             refused]"
        );
        assert!(firsts[1].ends_with("[webhook sent]"), "{lines:#?}");
        assert!(firsts.last().unwrap().contains("older, still pending"));
    }
}
