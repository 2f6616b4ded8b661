//! The journal's quality checks: what it sends of a test whose samples hold a stuck voltage
//! and a sign error, read back from a real outbox.

use super::*;
use crate::channel::{ChannelSpec, Ending, Shared, TestRequest};
use crate::proto::ingest::QualityFinding;
use crate::proto::quality::config::Layered;
use cyclerd_protocols::Safety;
use std::collections::HashMap;

/// A charge at 1 A then a discharge at 1 A; its thresholds call 50 equal voltages stuck.
const PROTOCOL: &str = r#"
protocol: Charge and discharge
version: 1
params: {capacity: 2 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Charge at 1 A until 4.1 V", "Discharge at 1 A until 3.0 V"]
"#;

fn shared(dir: &std::path::Path) -> Shared {
    let quality: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"protocols": {"Charge and discharge": {"stuck_samples": 50}}}"#)
            .unwrap();
    Shared {
        clock: Clock::manual(),
        outbox: Outbox::open(&dir.join("outbox.sqlite")).unwrap(),
        acquired: Arc::default(),
        device_errors: Arc::default(),
        reconnects: Arc::default(),
        quality: Arc::new(Layered::from_table(quality, "protocols", "quality").unwrap()),
    }
}

fn spec() -> ChannelSpec {
    ChannelSpec {
        id: "sim/1".into(),
        poll_interval_s: 1.0,
        comm_timeout: Duration::from_secs(5),
        limits: Safety::default(),
        commit_interval: Duration::from_millis(50),
        chamber: None,
        equipment: Vec::new(),
    }
}

fn state() -> RunnerState {
    RunnerState {
        json: "{}".into(),
        paused_s: 0.0,
    }
}

/// Sample `seq` of 400, a second apart: charge (plan step 0) for 200, then discharge; the
/// voltage stuck at 3.9 V over `stuck` and the current's sign wrong over `flipped`, the
/// capacities counting the current as measured.
fn sample(seq: u64, stuck: (u64, u64), flipped: (u64, u64), q: &mut (f64, f64)) -> Sample {
    let charging = seq < 200;
    let mut current = if charging { 1.0 } else { -1.0 };
    if (flipped.0..=flipped.1).contains(&seq) {
        current = -current;
    }
    if seq > 0 {
        if current > 0.0 {
            q.0 += current / 3600.0;
        } else {
            q.1 -= current / 3600.0;
        }
    }
    let t = seq as f64;
    let voltage = if (stuck.0..=stuck.1).contains(&seq) {
        3.9
    } else if charging {
        3.6 + t * 1e-3
    } else {
        3.8 - (t - 200.0) * 1e-3
    };
    Sample {
        test_time_s: t,
        unix_time_s: 1.7e9 + t,
        voltage_v: voltage,
        current_a: current,
        cycle: 1,
        step: if charging { 1 } else { 2 },
        plan_step: if charging { 0 } else { 1 },
        charge_ah: q.0,
        discharge_ah: q.1,
        charge_wh: q.0 * 3.7,
        discharge_wh: q.1 * 3.7,
        temperature_c: Some(25.0),
        ambient_c: None,
    }
}

/// Records a test of 400 samples (flushed every 64; with `restart_after`, the journal is taken
/// up again from its checkpoint after the flush that follows that seq, as a restarted daemon
/// does); returns the quality entries it sent and what the channel showed of them before the
/// end.
async fn record(
    stuck: (u64, u64),
    flipped: (u64, u64),
    restart_after: Option<u64>,
) -> (Vec<QualityFinding>, ChannelSnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let (live, _watch) = tokio::sync::watch::channel(ChannelSnapshot::default());
    let plan = Plan::from_yaml(PROTOCOL, "cd.yaml").unwrap();
    let restart_plan = plan.clone();
    let metadata = HashMap::from([("cell_id".to_string(), "C1".to_string())]);
    let test = TestRequest {
        plan,
        source: PROTOCOL.into(),
        origin: "cd.yaml".into(),
        metadata,
        notes: Vec::new(),
    };
    let mut journal = TestJournal::register(
        &shared,
        &spec(),
        &live,
        ("t1".into(), 1.7e9),
        test,
        state(),
        ((1, 1), "charge".into()),
    );
    let mut q = (0.0, 0.0);
    for seq in 0..400 {
        journal.push(sample(seq, stuck, flipped, &mut q));
        if seq % 64 == 63 {
            journal.flush(state);
            if restart_after.is_some_and(|r| seq >= r && seq < r + 64) {
                drop(journal);
                shared.outbox.flush().await.unwrap();
                let cps = shared.outbox.reader().unwrap().checkpoints().unwrap();
                journal = TestJournal::reopen(&shared, &cps[0]);
                journal.check_with(&shared, &restart_plan);
            }
        }
    }
    journal.flush(state);
    let mut shown = ChannelSnapshot::default();
    journal.show_throughput(&mut shown, (2, 1), q);
    journal.end(&live, 399.0, (2, 1), Ending::Finished);
    shared.outbox.flush().await.unwrap();
    let mut reader = shared.outbox.reader().unwrap();
    let sent = reader
        .page_after(0, 10_000)
        .unwrap()
        .into_iter()
        .filter_map(|item| match item {
            crate::outbox::PageItem::Entry(e) => match e.entry.body {
                Some(Body::Quality(q)) => Some(q),
                _ => None,
            },
            crate::outbox::PageItem::Corrupt { .. } => None,
        })
        .collect();
    (sent, shown)
}

/// The `(check, first seq, last seq)` of the findings sent open (or closed).
fn runs(sent: &[QualityFinding], open: bool) -> Vec<(&str, u64, u64)> {
    sent.iter()
        .filter(|f| f.open == open)
        .map(|f| (f.check.as_str(), f.first_seq, f.last_seq))
        .collect()
}

#[tokio::test]
async fn a_stuck_voltage_and_a_sign_error_at_known_seqs_are_sent_with_exactly_those_ranges() {
    let (sent, shown) = record((50, 149), (300, 309), None).await;
    assert_eq!(
        runs(&sent, false),
        [("voltage_stuck", 50, 149), ("current_sign", 300, 309)],
        "{sent:#?}"
    );
    // While the voltage stayed stuck the run was sent open, as far as it had gone.
    assert_eq!(runs(&sent, true), [("voltage_stuck", 50, 127)], "{sent:#?}");
    let sign = sent.iter().find(|f| f.check == "current_sign").unwrap();
    assert!(sign.reason.contains("in a discharge step"), "{sign:?}");
    assert_eq!(
        (sign.first_test_time_s, sign.last_test_time_s),
        (300.0, 309.0)
    );
    // The channel shows them (cyclerctl status).
    assert_eq!(shown.quality_findings, 2);
    assert!(
        shown
            .last_quality_finding
            .starts_with("current_sign seq 300..309: current 1 A in a discharge step"),
        "{shown:?}"
    );
}

#[tokio::test]
async fn a_clean_recording_sends_no_finding() {
    let none = (u64::MAX - 1, u64::MAX - 1);
    let (sent, shown) = record(none, none, None).await;
    assert_eq!(sent, []);
    assert_eq!(shown.quality_findings, 0);
}

#[tokio::test]
async fn a_stuck_voltage_going_on_across_a_daemon_restart_is_one_run_not_two() {
    // The restart comes after the flush of seq 127, in the middle of the stuck run 50..=149.
    let (sent, shown) = record((50, 149), (300, 309), Some(100)).await;
    assert_eq!(
        runs(&sent, false),
        [("voltage_stuck", 50, 149), ("current_sign", 300, 309)],
        "{sent:#?}"
    );
    assert_eq!(shown.quality_findings, 2);
}
