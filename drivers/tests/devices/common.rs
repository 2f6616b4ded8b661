//! What the tests of the cyclers that run schedules themselves (Neware, Arbin, Maccor) share:
//! the protocols they run, and the scenarios every family must pass the same way through its
//! own client and simulator.

use super::within;
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, ChannelStatus, Cycler, Record, Schedule};
use cyclerd_drivers::{Clock, DriverError, arbin, maccor, neware};
use cyclerd_protocols::Plan;
use cyclerd_protocols::compile::{Target, compile};
use std::time::Duration;

/// The library's C/2 CCCV charge to 4.2 V (C/20 cutoff), 1C discharge to 3.0 V, three cycles.
pub const CCCV_3_CYCLES: &str = include_str!("../../../deploy/protocols/cccv-3-cycles.yaml");

/// A charge that runs for hours from 30 % SOC.
pub const SLOW_CHARGE: &str = r#"
protocol: Slow charge
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Charge at C/5 until 4.2 V"]
"#;

/// A test that is over a minute after its start.
pub const SHORT_REST: &str = r#"
protocol: Short rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Rest for 1 minute"]
"#;

/// The protocol document `yaml` compiled for `target`, as the file `name` with the target's
/// extension.
pub fn schedule(yaml: &str, target: Target, name: &str) -> Schedule {
    let plan = Plan::from_yaml(yaml, &format!("{name}.yaml")).unwrap();
    Schedule {
        file_name: format!("{name}.{}", target.extension()),
        text: compile(&plan, target).unwrap(),
    }
}

/// Channel `n` of a cycler that numbers its channels by index alone (MacNet, CTI).
pub fn addr(n: u32) -> ChannelAddr {
    ChannelAddr {
        unit: 0,
        sub_unit: 0,
        channel: n,
    }
}

pub fn assert_contiguous(records: &[Record], from: u64) {
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r.index, from + k as u64, "record {k} of {records:?}");
    }
}

/// The faults every simulated cycler injects the same way, for the shared scenarios.
pub trait SimLink {
    fn cut_link(&self);
    fn restore_link(&self);
    fn set_reply_delay(&self, delay: Duration);
}

macro_rules! sim_link {
    ($($handle:ty),*) => {
        $(impl SimLink for $handle {
            fn cut_link(&self) {
                <$handle>::cut_link(self)
            }
            fn restore_link(&self) {
                <$handle>::restore_link(self)
            }
            fn set_reply_delay(&self, delay: Duration) {
                <$handle>::set_reply_delay(self, delay)
            }
        })*
    };
}

sim_link!(neware::SimHandle, arbin::SimHandle, maccor::SimHandle);

/// Follows `channel` as a runner does until its test is over: status, then the records after
/// the last one kept, moving a manual `clock` on by `step_s` each round (other clocks run by
/// themselves). Returns the final status and every record.
pub async fn follow_to_end(
    client: &mut impl Cycler,
    channel: ChannelAddr,
    clock: &Clock,
    step_s: f64,
) -> (ChannelStatus, Vec<Record>) {
    let follow = async {
        let mut records: Vec<Record> = Vec::new();
        let mut test = None;
        loop {
            clock.advance(step_s);
            let status = client.status(&[channel]).await.unwrap().remove(0);
            assert_eq!(status.addr, channel);
            assert!(
                status.state == ChannelState::Running || status.state.is_terminal(),
                "{status:?}"
            );
            // The same test throughout.
            assert_eq!(
                *test.get_or_insert_with(|| status.test.clone()),
                status.test
            );
            let next = records.len() as u64 + 1;
            records.extend(client.records(channel, next, 5000).await.unwrap());
            if status.state.is_terminal() && records.len() as u64 >= status.last_record {
                return (status, records);
            }
        }
    };
    within("the protocol to finish", follow).await
}

/// Checks what [`follow_to_end`] gave for [`CCCV_3_CYCLES`] started as `test`, on a cycler
/// logging a record every 10 s: finished, every record once, and each step ended where the
/// protocol ends it.
pub fn assert_cccv_3_cycles_finished(end: &ChannelStatus, records: &[Record], test: &str) {
    assert_eq!(end.state, ChannelState::Finished);
    assert_eq!(end.test.as_deref(), Some(test));
    assert_eq!(end.last_record, records.len() as u64);
    assert_contiguous(records, 1);
    assert_eq!(records[0].test_time_s, 0.0);
    assert!(
        records
            .windows(2)
            .all(|w| w[1].test_time_s >= w[0].test_time_s)
    );
    // Records come every 10 s within a step.
    assert!(
        records
            .windows(2)
            .all(|w| w[1].test_time_s - w[0].test_time_s <= 10.0 + 1e-6)
    );
    // The schedule's steps in order: CC charge, CV hold, discharge, then the loop's counter
    // step (not an action, so never logged).
    let steps: Vec<u32> = {
        let mut s: Vec<u32> = records.iter().map(|r| r.step).collect();
        s.dedup();
        s
    };
    let (cc, cv, dis) = (steps[0], steps[1], steps[2]);
    assert_eq!(steps, [cc, cv, dis].repeat(3), "{steps:?}");
    let last_of = |step: u32| -> Vec<&Record> {
        records
            .windows(2)
            .filter(|w| w[0].step == step && w[1].step != step)
            .map(|w| &w[0])
            .chain(records.last().filter(|r| r.step == step))
            .collect()
    };
    let cc_ends = last_of(cc);
    assert_eq!(cc_ends.len(), 3, "{cc_ends:?}");
    for r in cc_ends {
        assert!((r.voltage_v - 4.2).abs() < 0.01, "CC ends at 4.2 V: {r:?}");
        assert!((r.current_a - 1.25).abs() < 1e-3, "{r:?}");
    }
    for r in last_of(cv) {
        assert!((r.voltage_v - 4.2).abs() < 0.01, "{r:?}");
        assert!(r.current_a <= 0.125 + 1e-3, "CV ends at C/20: {r:?}");
    }
    let discharge_ends = last_of(dis);
    assert_eq!(discharge_ends.len(), 3, "{discharge_ends:?}");
    for r in &discharge_ends {
        assert!(
            r.voltage_v <= 3.0 && r.voltage_v > 2.95,
            "discharge ends at 3.0 V: {r:?}"
        );
        assert!((r.current_a + 2.5).abs() < 1e-3, "{r:?}");
    }
    assert_eq!(
        discharge_ends.iter().map(|r| r.cycle).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // A 1C discharge from 4.2 V to 3.0 V gives most of the 2.5 Ah.
    assert!(
        discharge_ends[2].capacity_ah > 2.0 && discharge_ends[2].capacity_ah < 2.6,
        "{:?}",
        discharge_ends[2]
    );
    assert!(records.iter().all(|r| r.temperature_c.is_some()));
}

/// Starts `schedule` (a test that runs for more than an hour) on `channel`, cuts the link ten
/// minutes in for an hour of the manual `clock`, and checks that the records read after the
/// reconnect fill the gap exactly, on a cycler logging a record every 10 s. Returns the
/// whole log as read.
pub async fn a_cut_link_gap_is_filled_exactly(
    sim: &impl SimLink,
    client: &mut impl Cycler,
    clock: &Clock,
    channel: ChannelAddr,
    schedule: &Schedule,
) -> Vec<Record> {
    client.start(channel, schedule, "gap").await.unwrap();
    clock.advance(600.0);
    let before = client.records(channel, 1, 10_000).await.unwrap();
    assert_contiguous(&before, 1);
    let last = *before.last().unwrap();

    sim.cut_link();
    let err = within("a status on a cut link", client.status(&[channel]))
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    let err = within("reconnecting to a cut link", client.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    // The cycler runs on for an hour while it is unreachable.
    clock.advance(3600.0);
    sim.restore_link();
    within("reconnecting", client.reconnect()).await.unwrap();

    let status = client.status(&[channel]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Running);
    let after = client
        .records(channel, last.index + 1, 10_000)
        .await
        .unwrap();
    assert_contiguous(&after, last.index + 1);
    assert_eq!(after.len() as u64, status.last_record - last.index);
    // No gap in time either: the first record after the cut follows within one interval.
    assert!(after[0].test_time_s > last.test_time_s);
    assert!(after[0].test_time_s - last.test_time_s <= 10.0 + 1e-6);
    assert!(after.last().unwrap().test_time_s > 4000.0);
    // Both parts together are exactly what a fresh download of the whole log gives.
    let whole = client.records(channel, 1, 10_000).await.unwrap();
    let joined: Vec<Record> = before.into_iter().chain(after).collect();
    assert_eq!(whole, joined);
    whole
}

/// On a cycler logging a record every second, with a test started on `channel` at the
/// manual `clock`'s present time: a log of 2601 records reads whole, and from any record in
/// pages of any size.
pub async fn long_logs_read_in_pages(
    client: &mut impl Cycler,
    clock: &Clock,
    channel: ChannelAddr,
) {
    clock.advance(2600.0);
    let status = client.status(&[channel]).await.unwrap().remove(0);
    assert_eq!(status.last_record, 2601);
    let all = client.records(channel, 1, 10_000).await.unwrap();
    assert_eq!(all.len(), 2601);
    assert_contiguous(&all, 1);
    let middle = client.records(channel, 999, 1500).await.unwrap();
    assert_eq!(middle.len(), 1500);
    assert_eq!(middle[..], all[998..2498]);
    assert!(client.records(channel, 2602, 10).await.unwrap().is_empty());
    assert!(client.records(channel, 1, 0).await.unwrap().is_empty());
}

/// With `client`'s timeout well under 30 s: a reply delayed that long is a timeout and a lost
/// link; the link stays down until a reconnect, which works once replies come in time again.
pub async fn a_delayed_reply_is_a_lost_link_until_reconnected(
    sim: &impl SimLink,
    client: &mut impl Cycler,
    channel: ChannelAddr,
) {
    sim.set_reply_delay(Duration::from_secs(30));
    let err = within("a delayed status", client.status(&[channel]))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    assert!(err.is_link_lost());
    // The connection is gone: nothing answers until a reconnect.
    let err = client.status(&[channel]).await.unwrap_err();
    assert!(matches!(err, DriverError::Link { .. }), "{err}");
    sim.set_reply_delay(Duration::ZERO);
    within("reconnecting", client.reconnect()).await.unwrap();
    client.status(&[channel]).await.unwrap();
}

/// Starts a test named `name(c)` on each of `channels` by what `state_of(c)` says the channel
/// is to be left doing: none when "idle", a one-minute rest when "finished", a charge for
/// hours otherwise.
pub async fn start_as_laid_out(
    client: &mut impl Cycler,
    channels: &[ChannelAddr],
    state_of: impl Fn(ChannelAddr) -> &'static str,
    name: impl Fn(ChannelAddr) -> String,
    target: Target,
) {
    for &c in channels {
        let yaml = match state_of(c) {
            "idle" => continue,
            "finished" => SHORT_REST,
            _ => SLOW_CHARGE,
        };
        let schedule = schedule(yaml, target, "protocol");
        client.start(c, &schedule, &name(c)).await.unwrap();
    }
}

/// Checks the status `s` of a channel [`start_as_laid_out`] left `idle` or gave the test
/// `name`, whose log the simulator counts `records` long.
pub fn assert_test_and_records(s: &ChannelStatus, idle: bool, name: String, records: u64) {
    let c = s.addr;
    assert_eq!(s.last_record, records, "channel {c}");
    if idle {
        assert_eq!(s.test, None, "channel {c}");
        assert_eq!(s.last_record, 0, "channel {c}");
    } else {
        assert_eq!(s.test, Some(name), "channel {c}");
        assert!(s.last_record > 1, "channel {c}: {s:?}");
    }
}

/// `err` is what a login with user `admin` and a wrong password gives: a refusal that says
/// which login, and no lost link.
pub fn assert_wrong_password(err: DriverError) {
    assert!(
        matches!(
            err,
            DriverError::Refused {
                during: "logging in",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("\"admin\"") && message.contains("password"),
        "{message}"
    );
    assert!(!err.is_link_lost());
}
