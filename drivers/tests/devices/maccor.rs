//! The MacNet driver against the simulated Maccor tester, through real TCP sockets (JSON and
//! binary) on loopback. Time is a manual clock moved by the tests (or a scaled one where the
//! driver's own pacing runs), so nothing waits on wall time.

use super::common::{
    CCCV_3_CYCLES, a_cut_link_gap_is_filled_exactly,
    a_delayed_reply_is_a_lost_link_until_reconnected, addr, assert_contiguous, follow_to_end,
    schedule,
};
use super::{TIMEOUT, cell, within};
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Record, Schedule};
use cyclerd_drivers::maccor::sim::SimHandle;
use cyclerd_drivers::maccor::wire::{self, Reading};
use cyclerd_drivers::maccor::{
    DirectConfig, MaccorClient, MaccorConfig, MaccorDirect, MaccorSim, RecordLog, SimConfig,
};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::{Clock, DriverError};
use cyclerd_protocols::compile::Target;
use cyclerd_protocols::{Engine, Measurement, Outcome, Plan, Safety};
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn tester(clock: &Clock, config: SimConfig) -> SimHandle {
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MaccorSim::spawn(json, binary, config, clock.clone()).unwrap()
}

async fn connect(sim: &SimHandle) -> MaccorClient {
    within(
        "connecting",
        MaccorClient::connect(sim.client_config(TIMEOUT)),
    )
    .await
    .unwrap()
}

fn rest(duration: &str) -> Schedule {
    let yaml = format!(
        "protocol: Rest\nversion: 1\nparams: {{capacity: 2.5 Ah}}\n\
         safety: {{voltage: [2.5 V, 4.25 V], current: 5 A}}\nsteps: [\"Rest for {duration}\"]\n"
    );
    let name = format!("REST-{}", duration.replace(' ', ""));
    schedule(&yaml, Target::Maccor, &name)
}

fn charge() -> Schedule {
    let yaml = "protocol: Charge\nversion: 1\nparams: {capacity: 2.5 Ah}\n\
                safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
                steps: [\"Charge at C/2 until 4.2 V\", \"Hold at 4.2 V until C/20\"]\n";
    schedule(yaml, Target::Maccor, "CHARGE")
}

/// Records as the client reports them, from the tester's own log.
fn expected(log: &[Reading]) -> Vec<(u64, f64, f64, f64)> {
    log.iter()
        .map(|r| {
            (
                u64::from(r.last_rec),
                f64::from(r.test_time_s),
                f64::from(r.voltage_v),
                r.signed_current(),
            )
        })
        .collect()
}

fn got(records: &[Record]) -> Vec<(u64, f64, f64, f64)> {
    records
        .iter()
        .map(|r| (r.index, r.test_time_s, r.voltage_v, r.current_a))
        .collect()
}

/// Downloads every record from `from` on.
async fn download(client: &mut MaccorClient, ch: ChannelAddr, from: u64) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    loop {
        let next = out.last().map_or(from, |r| r.index + 1);
        let batch = client.records(ch, next, 700).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn the_client_reads_the_testers_channels_and_version() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(8, cell(0.5))).await;
    let mut client = connect(&sim).await;
    assert_eq!(client.system_info().test_channels, 8);
    let channels = client.channels().await.unwrap();
    assert_eq!(channels.len(), 8);
    assert_eq!(channels[7], addr(7));
    assert_eq!(client.version().await.unwrap().api, 1);
    let err = client.status(&[addr(8)]).await.unwrap_err();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
}

#[tokio::test]
async fn a_full_protocol_compiled_to_maccor_runs_to_completion_with_contiguous_records() {
    let clock = Clock::manual();
    let mut config = SimConfig::new(4, cell(0.3));
    config.record_interval_s = 30.0;
    let sim = tester(&clock, config).await;
    let mut client = connect(&sim).await;
    let ch = addr(2);
    let cccv = schedule(CCCV_3_CYCLES, Target::Maccor, "CCCV-3");
    client
        .start(ch, &cccv, "cccv-3-cycles-cell-17")
        .await
        .unwrap();
    assert_eq!(sim.procedures(), vec!["CCCV-3".to_string()]);

    let (end, records) = follow_to_end(&mut client, ch, &clock, 120.0).await;
    assert_eq!(end.state, ChannelState::Finished);
    assert_eq!(end.test.as_deref(), Some("cccv-3-cycles-cell-17"));
    assert_eq!(records.len() as u64, end.last_record);
    assert_contiguous(&records, 1);
    assert_eq!(got(&records), expected(&sim.records(2)));
    assert_eq!(records.iter().map(|r| r.cycle).max(), Some(3));

    // Each charge ends at 4.2 V with the current tapered to C/20; each discharge at 3.0 V.
    let sign = |r: &Record| (r.current_a > 1e-9) as i8 - (r.current_a < -1e-9) as i8;
    let runs = records.chunk_by(|a, b| sign(a) == sign(b));
    let mut charges = 0;
    let mut discharges = 0;
    for run in runs {
        let last = run.last().unwrap();
        if last.current_a > 0.0 {
            charges += 1;
            assert!(
                (last.voltage_v - 4.2).abs() < 0.01,
                "charge ended at {last:?}"
            );
            assert!(last.current_a <= 0.125 + 1e-6, "CV ended at {last:?}");
        } else if last.current_a < 0.0 {
            discharges += 1;
            assert!(
                last.voltage_v <= 3.0 && last.voltage_v > 2.95,
                "discharge ended at {last:?}"
            );
        }
    }
    assert_eq!((charges, discharges), (3, 3));
    assert!(
        records
            .iter()
            .all(|r| r.voltage_v < 4.21 && r.voltage_v > 2.95)
    );
}

#[tokio::test]
async fn a_link_cut_mid_test_is_backfilled_exactly_from_the_record_log() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.2))).await;
    let mut client = connect(&sim).await;
    let all = a_cut_link_gap_is_filled_exactly(&sim, &mut client, &clock, addr(1), &charge()).await;
    assert_eq!(got(&all), expected(&sim.records(1)));
}

#[tokio::test]
async fn sixteen_channels_in_different_states_are_each_matched_to_their_own_channel() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(16, cell(0.5))).await;
    let mut client = connect(&sim).await;
    let long = rest("10 hours");
    let short = rest("5 minutes");
    for (n, test, schedule) in [
        (1, "running-1", &long),
        (3, "finished-3", &short),
        (6, "running-6", &long),
        (9, "suspended-9", &long),
        (12, "stopped-12", &long),
        (15, "problem-15", &long),
    ] {
        client.start(addr(n), schedule, test).await.unwrap();
    }
    client.suspend(9).await.unwrap();
    client.stop(addr(12)).await.unwrap();
    sim.set_problem(15, wire::rf2::VOLTAGE_SAFETY);
    clock.advance(600.0);

    // Asked in reverse order: every answer belongs to the channel asked for.
    let all: Vec<ChannelAddr> = (0..16).rev().map(addr).collect();
    let statuses = client.status(&all).await.unwrap();
    for (status, addr) in statuses.iter().zip(&all) {
        assert_eq!(status.addr, *addr);
        let n = addr.channel;
        let expected_state = match n {
            1 | 6 => ChannelState::Running,
            3 => ChannelState::Finished,
            9 => ChannelState::Paused,
            12 => ChannelState::Stopped,
            15 => {
                assert!(matches!(status.state, ChannelState::Fault { .. }));
                status.state.clone()
            }
            _ => ChannelState::Idle,
        };
        assert_eq!(status.state, expected_state, "channel {n}");
        let snapshot = sim.snapshot(n as u16);
        assert_eq!(status.test, snapshot.test, "channel {n}");
        if status.state != ChannelState::Idle {
            assert_eq!(
                status.last_record,
                u64::from(snapshot.last_rec),
                "channel {n}"
            );
        }
    }
    // A finished 5-minute rest logged less than a running 10-hour one.
    assert!(statuses[15 - 3].last_record < statuses[15 - 1].last_record);

    client.resume(9).await.unwrap();
    let status = client.status(&[addr(9)]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Running);
}

#[tokio::test]
async fn a_reading_answered_for_another_channel_is_refused_not_attributed() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(8, cell(0.5))).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(6), &rest("1 hour"), "misrouted")
        .await
        .unwrap();
    sim.misroute_next_reading(1);
    let err = client.status(&[addr(6)]).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::BadReply { message, .. } if message.contains("for channel 1, to a request for channel 6")),
        "{err}"
    );
    let status = client.status(&[addr(6)]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Running);
}

#[tokio::test]
async fn a_problem_state_is_recorded_as_a_fault_with_the_reason() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    let ch = addr(0);
    client.start(ch, &charge(), "problem-0").await.unwrap();
    clock.advance(60.0);
    sim.set_problem(0, wire::rf2::VOLTAGE_SAFETY);
    clock.advance(60.0);
    let status = client.status(&[ch]).await.unwrap().remove(0);
    let ChannelState::Fault { reason } = &status.state else {
        panic!("expected a fault, got {:?}", status.state);
    };
    assert!(reason.contains("problem"), "{reason}");
    assert!(reason.contains("voltage safety"), "{reason}");
    assert!(status.state.is_terminal());
    // The output is off and the tester logged the moment it tripped.
    let records = download(&mut client, ch, 1).await;
    assert_eq!(records.len() as u64, status.last_record);
    assert_eq!(records.last().unwrap().current_a, 0.0);
    assert_eq!(sim.snapshot(0).current_a, 0.0);
}

#[tokio::test]
async fn starting_with_a_duplicate_test_name_gives_the_clear_error() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(0), &rest("1 hour"), "cell-7-capacity")
        .await
        .unwrap();
    let err = client
        .start(addr(1), &rest("1 hour"), "cell-7-capacity")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DriverError::Refused { .. }), "{text}");
    assert!(text.contains("not unique"), "{text}");
    assert!(text.contains("cell-7-capacity"), "{text}");
    assert!(text.contains("result 19"), "{text}");

    // Its data file stays after the test: the name is still taken.
    client.stop(addr(0)).await.unwrap();
    let err = client
        .start(addr(0), &rest("1 hour"), "cell-7-capacity")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("result 20"), "{err}");
}

#[tokio::test]
async fn a_busy_channel_refuses_a_start_with_the_clear_error() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(1), &rest("1 hour"), "first")
        .await
        .unwrap();
    let err = client
        .start(addr(1), &rest("1 hour"), "second")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(!err.is_link_lost());
}

#[tokio::test]
async fn long_test_names_are_shortened_to_25_bytes_and_stay_unique() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    let a = "0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f";
    let b = "0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e80";
    client.start(addr(0), &rest("1 hour"), a).await.unwrap();
    client.start(addr(1), &rest("1 hour"), b).await.unwrap();
    let (na, nb) = (sim.snapshot(0).test.unwrap(), sim.snapshot(1).test.unwrap());
    assert!(na.len() <= 25 && nb.len() <= 25);
    assert_ne!(na, nb);
    assert_eq!(na, wire::short_name(a));
}

#[tokio::test]
async fn a_finished_test_is_reset_before_the_next_start_on_its_channel() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(1, cell(0.5))).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(0), &rest("5 minutes"), "first")
        .await
        .unwrap();
    clock.advance(600.0);
    let status = client.status(&[addr(0)]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Finished);
    client
        .start(addr(0), &rest("5 minutes"), "second")
        .await
        .unwrap();
    let status = client.status(&[addr(0)]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Running);
    assert_eq!(status.test.as_deref(), Some("second"));
}

#[tokio::test]
async fn a_tester_without_the_record_download_falls_back_to_the_newest_reading() {
    for behaviour in [RecordLog::Refused, RecordLog::Ignored] {
        let clock = Clock::manual();
        let mut config = SimConfig::new(1, cell(0.5));
        config.record_log = behaviour;
        let sim = tester(&clock, config).await;
        let mut client = within(
            "connecting",
            MaccorClient::connect(sim.client_config(Duration::from_millis(300))),
        )
        .await
        .unwrap();
        let ch = addr(0);
        client.start(ch, &rest("1 hour"), "fallback").await.unwrap();
        clock.advance(95.0);
        let records = within("the first download", client.records(ch, 1, 100))
            .await
            .unwrap();
        let last = sim.snapshot(0).last_rec;
        assert_eq!(records.len(), 1, "{behaviour:?}");
        assert_eq!(records[0].index, u64::from(last), "{behaviour:?}");
        assert!(
            client
                .records(ch, u64::from(last) + 1, 100)
                .await
                .unwrap()
                .is_empty()
        );
        // Both links are still usable after the refused download.
        assert_eq!(
            client.status(&[ch]).await.unwrap()[0].state,
            ChannelState::Running
        );
        client.stop(ch).await.unwrap();
        client
            .start(ch, &rest("1 hour"), "after-fallback")
            .await
            .unwrap();
    }
}

/// A request as pymacnet sends it: `json.dumps(..., indent=4)`, no terminator.
fn pretty_request(id: u64, function: wire::Function, chan: Option<u16>) -> String {
    let compact = wire::json_request(id, function, chan, serde_json::Map::new());
    let v: serde_json::Value = serde_json::from_str(compact.trim_end()).unwrap();
    serde_json::to_string_pretty(&v).unwrap()
}

/// Reads complete reply objects off `rd` until `n` are in.
async fn replies(rd: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) -> Vec<wire::JsonReply> {
    let mut objects = wire::JsonSplitter::new(wire::MAX_JSON_OBJECT);
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(o) = objects.next_object().unwrap() {
            out.push(wire::parse_json_reply(&String::from_utf8_lossy(&o)).unwrap());
        }
        if out.len() >= n {
            break;
        }
        let mut chunk = [0u8; 4096];
        let k = rd.read(&mut chunk).await.unwrap();
        assert!(k > 0, "the simulator closed the connection");
        objects.push(&chunk[..k]);
    }
    out
}

#[tokio::test]
async fn the_simulator_answers_a_pretty_printed_request_without_a_terminator() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut s = TcpStream::connect(sim.json_addr()).await.unwrap();
    let request = pretty_request(1987, wire::SYSTEM_INFO, None);
    assert!(request.contains('\n') && !request.ends_with('\n'));
    s.write_all(request.as_bytes()).await.unwrap();
    let got = within("the reply", replies(&mut s, 1)).await;
    assert!(
        matches!(&got[0], wire::JsonReply::Result { id: Some(1987), function, .. } if *function == wire::SYSTEM_INFO),
        "{got:?}"
    );
}

#[tokio::test]
async fn two_requests_back_to_back_in_one_write_get_two_replies_in_order() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut s = TcpStream::connect(sim.json_addr()).await.unwrap();
    let both = format!(
        "{}{}",
        pretty_request(5, wire::SYSTEM_INFO, None),
        wire::json_request(6, wire::VERSION, None, serde_json::Map::new()).trim_end()
    );
    s.write_all(both.as_bytes()).await.unwrap();
    let got = within("both replies", replies(&mut s, 2)).await;
    let ids: Vec<Option<u64>> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids, [Some(5), Some(6)]);
}

/// A tester that answers like pymacnet's own fake server: pretty-printed, no terminator,
/// each reply in three writes. It relays to the simulator for the contents.
async fn pretty_tester(sim: &SimHandle) -> MaccorConfig {
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = MaccorConfig {
        json_port: json.local_addr().unwrap().port(),
        ..sim.client_config(TIMEOUT)
    };
    let upstream = sim.json_addr();
    tokio::spawn(async move {
        while let Ok((stream, _)) = json.accept().await {
            tokio::spawn(async move {
                stream.set_nodelay(true).unwrap();
                let (mut rd, mut wr) = stream.into_split();
                let up = TcpStream::connect(upstream).await.unwrap();
                let (up_rd, mut up_wr) = up.into_split();
                let mut up_lines = BufReader::new(up_rd).lines();
                let mut objects = wire::JsonSplitter::new(wire::MAX_JSON_OBJECT);
                loop {
                    while let Ok(Some(o)) = objects.next_object() {
                        up_wr.write_all(&o).await.unwrap();
                        up_wr.write_all(b"\r\n").await.unwrap();
                        let line = up_lines.next_line().await.unwrap().unwrap();
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let pretty = serde_json::to_string_pretty(&v).unwrap().into_bytes();
                        let third = pretty.len() / 3;
                        for piece in [
                            &pretty[..third],
                            &pretty[third..2 * third],
                            &pretty[2 * third..],
                        ] {
                            wr.write_all(piece).await.unwrap();
                            wr.flush().await.unwrap();
                            tokio::task::yield_now().await;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => objects.push(&chunk[..n]),
                    }
                }
            });
        }
    });
    config
}

#[tokio::test]
async fn the_client_reads_pretty_printed_replies_split_across_several_writes() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(4, cell(0.5))).await;
    let config = pretty_tester(&sim).await;
    let mut client = within("connecting", MaccorClient::connect(config))
        .await
        .unwrap();
    assert_eq!(client.system_info().test_channels, 4);
    assert_eq!(client.version().await.unwrap().api, 1);
    let status = client.status(&[addr(0), addr(3)]).await.unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(status[1].state, ChannelState::Idle);
}

#[tokio::test]
async fn an_error_reply_is_reported_and_the_link_stays_usable() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    sim.fail_next(1);
    let err = client.status(&[addr(0)]).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. } if message.contains("MacNet error")),
        "{err}"
    );
    assert!(!err.is_link_lost());
    assert_eq!(
        client.status(&[addr(0)]).await.unwrap()[0].state,
        ChannelState::Idle
    );
}

#[tokio::test]
async fn delayed_replies_time_out_as_lost_links() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = within(
        "connecting",
        MaccorClient::connect(sim.client_config(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    a_delayed_reply_is_a_lost_link_until_reconnected(&sim, &mut client, addr(0)).await;
}

#[tokio::test]
async fn an_unreachable_tester_is_a_connect_error_naming_the_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = MaccorConfig {
        json_port: addr.port(),
        binary_port: addr.port(),
        timeout: TIMEOUT,
        ..MaccorConfig::new(addr.ip())
    };
    let err = MaccorClient::connect(config).await.err().unwrap();
    assert!(matches!(err, DriverError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));
}

#[test]
fn the_default_config_uses_the_system_ini_ports() {
    let config = MaccorConfig::new("192.168.63.145".parse().unwrap());
    assert_eq!((config.binary_port, config.json_port), (57560, 57570));
    assert_eq!(config.timeout, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Direct mode
// ---------------------------------------------------------------------------------------------

async fn direct(
    sim: &SimHandle,
    clock: &Clock,
    chan: u32,
    test: &str,
    keepalive_s: f64,
) -> MaccorDirect {
    let client = connect(sim).await;
    within(
        "entering direct mode",
        MaccorDirect::enter(
            client,
            addr(chan),
            test,
            DirectConfig {
                keepalive_s,
                ..DirectConfig::new(10.0, 5.0)
            },
            clock.clone(),
        ),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_cccv_step_driven_through_direct_mode_keeps_outputs_100_ms_apart() {
    // Scaled time: the stage's 100 ms spacing waits on this clock for real.
    let clock = Clock::scaled(1000.0);
    let sim = tester(&clock, SimConfig::new(2, cell(0.7))).await;
    let mut stage = direct(&sim, &clock, 1, "direct-cccv", 10.0).await;
    let yaml = "protocol: CCCV\nversion: 1\nparams: {capacity: 2.5 Ah}\n\
                safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
                steps: [\"Charge at C/2 until 4.2 V\", \"Hold at 4.2 V until C/20\"]\n";
    let plan = Plan::from_yaml(yaml, "cccv.yaml").unwrap();
    let mut engine = Engine::new(plan, &Safety::default()).unwrap();
    let t0 = clock.now();
    let run = async {
        let mut command = engine.start(0.0);
        stage.apply(&command).await.unwrap();
        let mut last = None;
        loop {
            let r = stage.read().await.unwrap();
            assert!(!r.alarm);
            let update = engine.update(&Measurement {
                chamber_c: None,
                test_time_s: clock.now() - t0,
                voltage_v: r.voltage_v,
                current_a: r.current_a,
                temperature_c: None,
            });
            if let Some(outcome) = update.outcome {
                assert_eq!(outcome, Outcome::Finished);
                stage.output_off().await.unwrap();
                return last.unwrap();
            }
            if command.output_on() {
                assert!(r.output_on, "{r:?}");
            }
            command = update.command;
            stage.apply(&command).await.unwrap();
            last = Some(r);
        }
    };
    let last = within("the CCCV charge", run).await;
    assert!((last.voltage_v - 4.2).abs() < 0.01, "{last:?}");
    assert!(last.current_a > 0.0 && last.current_a < 0.2, "{last:?}");

    let outputs = sim.direct_outputs(1);
    assert!(outputs.len() >= 3, "{outputs:?}");
    assert!(
        outputs.windows(2).all(|w| w[1] - w[0] >= 0.1),
        "{outputs:?}"
    );
    assert_eq!(sim.refused_outputs(1), 0);
    assert_eq!(sim.snapshot(1).current_a, 0.0);
    stage.finish().await.unwrap();
    assert_eq!(sim.snapshot(1).stat, wire::stat::AVAILABLE);
}

#[tokio::test]
async fn a_second_output_within_100_ms_waits_instead_of_being_refused() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(1, cell(0.5))).await;
    let mut stage = direct(&sim, &clock, 0, "paced", 1.0).await;
    // 50 ms after entering direct mode: the first output must wait another 50 ms.
    clock.advance(0.05);
    let task = tokio::spawn(async move {
        stage
            .apply(&cyclerd_protocols::Command::Current {
                amps: 1.0,
                voltage_max: 4.2,
                voltage_min: 2.5,
            })
            .await
            .map(|()| stage)
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
        clock.advance(0.005);
    }
    let mut stage = within("the paced output", task).await.unwrap().unwrap();
    assert_eq!(sim.refused_outputs(0), 0);
    let outputs = sim.direct_outputs(0);
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0] >= 0.1, "{outputs:?}");
    let r = stage.read().await.unwrap();
    assert!(r.output_on && (r.current_a - 1.0).abs() < 1e-6, "{r:?}");
    // Rest goes out in the binary form and switches the output off.
    clock.advance(0.2);
    stage.output_off().await.unwrap();
    let r = stage.read().await.unwrap();
    assert!(!r.output_on && r.current_a == 0.0, "{r:?}");
}

#[tokio::test]
async fn reads_keep_the_direct_mode_watchdog_fed_and_an_unfed_channel_suspends() {
    let clock = Clock::manual();
    let mut config = SimConfig::new(2, cell(0.5));
    config.direct_watchdog_s = Some(2.0);
    let sim = tester(&clock, config).await;
    let mut stage = direct(&sim, &clock, 0, "watched", 1.0).await;
    clock.advance(0.2);
    let discharge = cyclerd_protocols::Command::Current {
        amps: -1.0,
        voltage_max: 4.2,
        voltage_min: 2.5,
    };
    stage.apply(&discharge).await.unwrap();
    for _ in 0..10 {
        clock.advance(0.9);
        let r = stage.read().await.unwrap();
        assert!(r.output_on && (r.current_a + 1.0).abs() < 1e-6, "{r:?}");
    }
    assert_eq!(sim.snapshot(0).stat, wire::stat::ACTIVE);

    // Nobody feeds it for longer than the watchdog allows: the tester suspends the channel.
    clock.advance(3.0);
    assert_eq!(sim.snapshot(0).stat, wire::stat::SUSPENDED);
    assert_eq!(sim.snapshot(0).current_a, 0.0);
    let err = stage.read().await.unwrap_err();
    assert!(err.to_string().contains("not active"), "{err}");
}

#[tokio::test]
async fn direct_mode_needs_a_free_channel_and_a_unique_name() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(0), &rest("1 hour"), "busy")
        .await
        .unwrap();
    let err = MaccorDirect::enter(
        connect(&sim).await,
        addr(0),
        "direct",
        DirectConfig::new(10.0, 5.0),
        clock.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
    let err = MaccorDirect::enter(
        connect(&sim).await,
        addr(1),
        "busy",
        DirectConfig::new(10.0, 5.0),
        clock.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("not unique"), "{err}");
}

#[tokio::test]
async fn direct_mode_on_a_channel_beyond_the_testers_channels_is_an_error_naming_the_tester() {
    let clock = Clock::manual();
    let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
    let err = MaccorDirect::enter(
        connect(&sim).await,
        addr(2),
        "direct",
        DirectConfig::new(10.0, 5.0),
        clock.clone(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("is not on Maccor tester"), "{err}");
    assert!(err.contains("it has 2 test channels"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

/// A fake tester that answers (1,2) properly and every other request with `garbage` (JSON:
/// as one line, then the connection closes, as unbalanced braces may never end an object;
/// binary: raw, then the connection closes).
async fn garbage_tester(garbage: Vec<u8>) -> MaccorConfig {
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = MaccorConfig {
        json_port: json.local_addr().unwrap().port(),
        binary_port: binary.local_addr().unwrap().port(),
        timeout: Duration::from_millis(500),
        ..MaccorConfig::new(json.local_addr().unwrap().ip())
    };
    let mut line_garbage = String::from_utf8_lossy(&garbage).replace(['\r', '\n'], " ");
    line_garbage.push_str("\r\n");
    tokio::spawn(async move {
        while let Ok((stream, _)) = json.accept().await {
            let reply_garbage = line_garbage.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = match wire::parse_json_request(&line) {
                        Ok(req) if req.function == wire::SYSTEM_INFO => {
                            let mut fields = serde_json::Map::new();
                            fields.insert("TestChannels".into(), 4.into());
                            wire::json_result(&req.id, req.function, None, fields)
                        }
                        _ => {
                            let _ = wr.write_all(reply_garbage.as_bytes()).await;
                            return;
                        }
                    };
                    if wr.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = binary.accept().await {
            let garbage = garbage.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await
                    && n > 0
                {
                    let _ = stream.write_all(&garbage).await;
                }
            });
        }
    });
    config
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever a tester answers, the client reports an error (or a value) and never panics.
    #[test]
    fn arbitrary_replies_give_the_client_errors_not_panics(
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let config = garbage_tester(garbage).await;
            let Ok(mut client) = MaccorClient::connect(config).await else {
                return;
            };
            let _ = client.status(&[addr(0), addr(3)]).await;
            let _ = client.reconnect().await;
            let _ = client.records(addr(1), 1, 10).await;
            let _ = client.reconnect().await;
            let _ = client.start(addr(2), &Schedule { file_name: "X.000".into(), text: "x".into() }, "t").await;
            let _ = client.reconnect().await;
            let _ = client.stop(addr(0)).await;
        });
    }

    /// Whatever a client sends, the simulated tester keeps serving: on the same JSON
    /// connection after bytes that open no object (each run answered "Parse error"), and on
    /// new connections after anything (an unclosed `{` legitimately waits for its object).
    #[test]
    fn arbitrary_requests_do_not_stop_the_simulated_tester(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = Clock::manual();
            let sim = tester(&clock, SimConfig::new(2, cell(0.5))).await;
            let mut garbage = String::from_utf8_lossy(&bytes).replace(['\r', '\n'], " ");
            garbage.push_str("\r\n");
            garbage.push_str(&wire::json_request(7, wire::SYSTEM_INFO, None, serde_json::Map::new()));
            let stream = TcpStream::connect(sim.json_addr()).await.unwrap();
            let (mut rd, mut wr) = stream.into_split();
            wr.write_all(garbage.as_bytes()).await.unwrap();
            if !bytes.contains(&b'{') {
                let answered = within("the request after the garbage", async {
                    let mut objects = wire::JsonSplitter::new(wire::MAX_JSON_OBJECT);
                    loop {
                        while let Ok(Some(o)) = objects.next_object() {
                            if let Ok(wire::JsonReply::Result { id: Some(7), .. }) =
                                wire::parse_json_reply(&String::from_utf8_lossy(&o))
                            {
                                return true;
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        match rd.read(&mut chunk).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => objects.push(&chunk[..n]),
                        }
                    }
                })
                .await;
                assert!(answered);
            }
            drop((rd, wr));
            let mut s = TcpStream::connect(sim.binary_addr()).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            drop(s);
            let mut client = MaccorClient::connect(sim.client_config(TIMEOUT)).await.unwrap();
            assert_eq!(client.channels().await.unwrap().len(), 2);
            assert!(client.records(addr(0), 1, 10).await.unwrap().is_empty());
        });
    }
}
