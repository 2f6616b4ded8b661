//! The Neware driver against the BTS simulator, through real TCP sockets on loopback: protocols
//! compiled to step files, delivered through a shared folder, run by the simulated cycler and
//! followed and backfilled by the client.

use super::common::{
    CCCV_3_CYCLES, SHORT_REST, SLOW_CHARGE, a_cut_link_gap_is_filled_exactly,
    a_delayed_reply_is_a_lost_link_until_reconnected, assert_cccv_3_cycles_finished,
    assert_contiguous, assert_test_and_records, assert_wrong_password, follow_to_end,
    long_logs_read_in_pages, start_as_laid_out,
};
use super::{TIMEOUT, cell, within};
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Schedule};
use cyclerd_drivers::neware::sim::SAFETY_LOG_CODE;
use cyclerd_drivers::neware::wire::{self, PathMap, WorkStatus};
use cyclerd_drivers::neware::{NewareClient, NewareConfig, NewareSim, SimConfig, SimHandle};
use cyclerd_drivers::{Clock, DriverError};
use cyclerd_protocols::compile::Target;
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn schedule(yaml: &str) -> Schedule {
    super::common::schedule(yaml, Target::Neware, "protocol")
}

fn chl(subdevid: u32, chlid: u32) -> ChannelAddr {
    ChannelAddr {
        unit: 7,
        sub_unit: subdevid,
        channel: chlid,
    }
}

/// A simulated cycler with device 7, `units` x `per_unit` channels, cells at 30 % SOC and a
/// record every 10 s, reading step files from a fresh folder; `adjust` changes the rest.
async fn sim(
    clock: &Clock,
    units: u32,
    per_unit: u32,
    adjust: impl FnOnce(&mut SimConfig),
) -> (SimHandle, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimConfig::new(7, units, per_unit, cell(0.3), dir.path());
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (
        NewareSim::spawn(listener, config, clock.clone()).unwrap(),
        dir,
    )
}

fn config(sim: &SimHandle, steps: &Path) -> NewareConfig {
    NewareConfig {
        timeout: TIMEOUT,
        ..NewareConfig::new(sim.addr(), steps)
    }
}

async fn connect(sim: &SimHandle, steps: &Path) -> NewareClient {
    within("connecting", NewareClient::connect(config(sim, steps)))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_compiled_cccv_protocol_runs_to_its_end_and_every_record_comes_back_once() {
    let clock = Clock::scaled(20_000.0);
    let (sim, dir) = sim(&clock, 1, 2, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    assert_eq!(client.channels().await.unwrap(), vec![chl(1, 1), chl(1, 2)]);
    let ch = chl(1, 2);
    client
        .start(ch, &schedule(CCCV_3_CYCLES), "cell-42 cccv")
        .await
        .unwrap();
    // The scaled clock runs by itself.
    let (end, records) = follow_to_end(&mut client, ch, &clock, 0.0).await;
    assert_cccv_3_cycles_finished(&end, &records, "cell-42 cccv");
    // Neware numbers the step file's steps from 1.
    assert_eq!(records.iter().map(|r| r.step).max(), Some(3));
    assert_eq!(sim.channel(ch).unwrap().status, WorkStatus::Finish);
}

#[tokio::test]
async fn records_after_a_cut_link_fill_the_gap_exactly() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    let schedule = schedule(CCCV_3_CYCLES);
    a_cut_link_gap_is_filled_exactly(&sim, &mut client, &clock, chl(1, 1), &schedule).await;
}

/// What each channel of a 2 x 8 cycler is doing; channels with the same `chlid` in the two
/// units differ, so a reply given to the wrong unit shows.
const LAYOUT: [[&str; 8]; 2] = [
    [
        "idle", "running", "finished", "protect", "stopped", "paused", "running", "idle",
    ],
    [
        "running", "finished", "protect", "stopped", "paused", "idle", "idle", "running",
    ],
];

async fn sixteen_channels_report_their_own_states(wrong_subdevid: bool) {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 2, 8, |c| c.wrong_subdevid = wrong_subdevid).await;
    let mut client = connect(&sim, dir.path()).await;
    let all = client.channels().await.unwrap();
    assert_eq!(all.len(), 16);
    let state_of = |c: ChannelAddr| LAYOUT[c.sub_unit as usize - 1][c.channel as usize - 1];
    let name = |c: ChannelAddr| format!("test {c}");

    start_as_laid_out(&mut client, &all, state_of, name, Target::Neware).await;
    clock.advance(300.0);
    for &c in &all {
        match state_of(c) {
            "protect" => assert!(sim.raise_protect(c, 9)),
            "stopped" => client.stop(c).await.unwrap(),
            "paused" => assert!(sim.set_paused(c, true)),
            _ => {}
        }
    }
    clock.advance(60.0);

    // Asked in reverse order; the server answers in its own.
    let asked: Vec<ChannelAddr> = all.iter().rev().copied().collect();
    let statuses = client.status(&asked).await.unwrap();
    assert_eq!(statuses.len(), 16);
    for (s, &c) in statuses.iter().zip(&asked) {
        assert_eq!(s.addr, c);
        let expected = match state_of(c) {
            "idle" => ChannelState::Idle,
            "running" => ChannelState::Running,
            "finished" => ChannelState::Finished,
            "protect" => ChannelState::Fault {
                reason: "protect (log_code 9)".into(),
            },
            "stopped" => ChannelState::Stopped,
            _ => ChannelState::Paused,
        };
        assert_eq!(s.state, expected, "channel {c}");
        let records = sim.channel(c).unwrap().records;
        assert_test_and_records(s, state_of(c) == "idle", name(c), records);
    }
}

#[tokio::test]
async fn sixteen_channels_in_different_states_are_each_matched_to_their_own_status() {
    sixteen_channels_report_their_own_states(false).await;
}

#[tokio::test]
async fn statuses_reported_under_a_wrong_subdevid_still_reach_their_own_channel() {
    sixteen_channels_report_their_own_states(true).await;
}

#[tokio::test]
async fn a_tripped_protection_is_a_fault_with_its_reason_and_keeps_the_records_up_to_it() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 4, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    let ch = chl(1, 3);
    client
        .start(ch, &schedule(SLOW_CHARGE), "protected")
        .await
        .unwrap();
    clock.advance(305.0);
    assert!(sim.raise_protect(ch, 42));
    clock.advance(600.0);

    let status = client.status(&[ch]).await.unwrap().remove(0);
    assert_eq!(
        status.state,
        ChannelState::Fault {
            reason: "protect (log_code 42)".into()
        }
    );
    assert!(status.state.is_terminal());
    let records = client.records(ch, 1, 10_000).await.unwrap();
    assert_contiguous(&records, 1);
    assert_eq!(records.len() as u64, status.last_record);
    // Every 10 s up to 300 s, then the moment the protection tripped; nothing after it.
    let last = records.last().unwrap();
    assert_eq!(records.len(), 32);
    assert!((last.test_time_s - 305.0).abs() < 1e-6, "{last:?}");
    assert!(last.current_a > 0.4, "charging until the trip: {last:?}");
    let snapshot = sim.channel(ch).unwrap();
    assert_eq!(snapshot.current_a, 0.0, "the output is off: {snapshot:?}");
    assert!(
        client
            .records(ch, last.index + 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_step_file_protection_ends_a_test_in_protect() {
    let clock = Clock::manual();
    // A cell that starts almost full overshoots a charge's safety window at once.
    let (sim, dir) = sim(&clock, 1, 1, |c| c.cells = vec![cell(1.02)]).await;
    let mut client = connect(&sim, dir.path()).await;
    let ch = chl(1, 1);
    let yaml = SLOW_CHARGE.replace("until 4.2 V", "for 1 hour");
    client.start(ch, &schedule(&yaml), "full").await.unwrap();
    clock.advance(60.0);
    let status = client.status(&[ch]).await.unwrap().remove(0);
    assert_eq!(
        status.state,
        ChannelState::Fault {
            reason: format!("protect (log_code {SAFETY_LOG_CODE})")
        }
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_clear_error() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let config = NewareConfig {
        password: "guess".into(),
        ..config(&sim, dir.path())
    };
    let err = within("logging in", NewareClient::connect(config))
        .await
        .err()
        .unwrap();
    assert_wrong_password(err);
}

#[tokio::test]
async fn requests_before_login_are_refused() {
    let clock = Clock::manual();
    let (sim, _dir) = sim(&clock, 1, 1, |_| {}).await;
    let mut raw = TcpStream::connect(sim.addr()).await.unwrap();
    raw.write_all(wire::getdevinfo_request().as_bytes())
        .await
        .unwrap();
    let reply = within("a reply", read_frame(&mut raw)).await;
    assert!(matches!(
        wire::parse_getdevinfo_reply(&reply),
        Err(wire::WireError::Refused(_))
    ));
    raw.write_all(wire::connect_request("admin", "neware").as_bytes())
        .await
        .unwrap();
    wire::parse_connect_reply(&within("a reply", read_frame(&mut raw)).await).unwrap();
    raw.write_all(wire::getdevinfo_request().as_bytes())
        .await
        .unwrap();
    let channels = wire::parse_getdevinfo_reply(&within("a reply", read_frame(&mut raw)).await);
    assert_eq!(channels.unwrap().len(), 1);
}

async fn read_frame(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = wire::frame_end(&buf, 0).unwrap() {
            let frame = String::from_utf8(buf[..end.frame].to_vec()).unwrap();
            assert!(frame.ends_with(wire::TERMINATOR), "{frame:?}");
            assert!(frame.contains("\r\n<cmd>"), "replies use CRLF: {frame:?}");
            return frame;
        }
        assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0, "closed");
    }
}

#[tokio::test]
async fn start_delivers_the_step_file_where_the_bts_pc_reads_it() {
    let clock = Clock::manual();
    let remote = r"D:\cyclerd\steps";
    let (sim, dir) = sim(&clock, 1, 1, |c| {
        c.steps = PathMap {
            local: c.steps.local.clone(),
            remote: Some(remote.into()),
        }
    })
    .await;
    let config = NewareConfig {
        remote_step_folder: Some(remote.into()),
        ..config(&sim, dir.path())
    };
    let mut client = NewareClient::connect(config).await.unwrap();
    let ch = chl(1, 1);
    let schedule = schedule(SHORT_REST);
    client.start(ch, &schedule, "cell/7: rest").await.unwrap();
    let written = std::fs::read_to_string(dir.path().join("cell_7_ rest_protocol.xml")).unwrap();
    assert_eq!(written, schedule.text);
    assert_eq!(sim.channel(ch).unwrap().status, WorkStatus::Working);

    // A channel running a test refuses another start.
    let err = client.start(ch, &schedule, "again").await.unwrap_err();
    assert!(
        matches!(
            err,
            DriverError::Refused {
                during: "starting a test",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(remote), "{err}");
}

#[tokio::test]
async fn a_step_file_the_bts_pc_cannot_find_is_refused_at_start() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |c| {
        c.steps.remote = Some(r"D:\cyclerd\steps".into())
    })
    .await;
    let config = NewareConfig {
        remote_step_folder: Some(r"E:\elsewhere".into()),
        ..config(&sim, dir.path())
    };
    let mut client = NewareClient::connect(config).await.unwrap();
    let err = client
        .start(chl(1, 1), &schedule(SHORT_REST), "lost")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(r"E:\elsewhere\lost_protocol.xml"),
        "{err}"
    );
    assert_eq!(sim.channel(chl(1, 1)).unwrap().status, WorkStatus::Stop);
}

#[tokio::test]
async fn a_step_folder_that_cannot_be_written_is_a_file_error() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let mut client = connect(&sim, &dir.path().join("missing")).await;
    let err = client
        .start(chl(1, 1), &schedule(SHORT_REST), "nowhere")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::File { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!err.is_link_lost());
}

#[tokio::test]
async fn stop_ends_the_test_and_a_paused_test_reports_paused() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 2, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    let (a, b) = (chl(1, 1), chl(1, 2));
    for c in [a, b] {
        client
            .start(c, &schedule(SLOW_CHARGE), &format!("t{c}"))
            .await
            .unwrap();
    }
    clock.advance(100.0);
    client.stop(a).await.unwrap();
    assert!(sim.set_paused(b, true));
    clock.advance(100.0);
    let s = client.status(&[a, b]).await.unwrap();
    assert_eq!(s[0].state, ChannelState::Stopped);
    assert_eq!(s[1].state, ChannelState::Paused);
    // Test time stands still while paused.
    assert!((sim.channel(b).unwrap().test_time_s - 100.0).abs() < 1e-6);
    assert!(sim.set_paused(b, false));
    clock.advance(100.0);
    assert_eq!(
        client.status(&[b]).await.unwrap()[0].state,
        ChannelState::Running
    );
    assert!((sim.channel(b).unwrap().test_time_s - 200.0).abs() < 1e-6);
    // The stopped test's log ends where it was stopped.
    let records = client.records(a, 1, 100).await.unwrap();
    assert!((records.last().unwrap().test_time_s - 100.0).abs() < 1e-6);
    // A test stopped while paused ends with the output off, as it was.
    clock.advance(5.0);
    assert!(sim.set_paused(b, true));
    clock.advance(5.0);
    client.stop(b).await.unwrap();
    let records = client.records(b, 1, 100).await.unwrap();
    let last = records.last().unwrap();
    assert!((last.test_time_s - 205.0).abs() < 1e-6, "{last:?}");
    assert_eq!(last.current_a, 0.0, "{last:?}");
}

#[tokio::test]
async fn long_logs_are_read_in_pages_of_a_thousand_from_any_record() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |c| c.record_interval_s = 1.0).await;
    let mut client = connect(&sim, dir.path()).await;
    let ch = chl(1, 1);
    client
        .start(ch, &schedule(SLOW_CHARGE), "long")
        .await
        .unwrap();
    long_logs_read_in_pages(&mut client, &clock, ch).await;
}

#[tokio::test]
async fn refused_requests_are_reported_and_keep_the_link() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    sim.fail_next(2);
    for _ in 0..2 {
        let err = client.status(&[chl(1, 1)]).await.unwrap_err();
        assert!(matches!(err, DriverError::Refused { .. }), "{err}");
        assert!(!err.is_link_lost());
    }
    let s = client.status(&[chl(1, 1)]).await.unwrap();
    assert_eq!(s[0].state, ChannelState::Idle);
}

#[tokio::test]
async fn delayed_replies_time_out_as_lost_links() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let config = NewareConfig {
        timeout: Duration::from_millis(300),
        ..config(&sim, dir.path())
    };
    let mut client = NewareClient::connect(config).await.unwrap();
    a_delayed_reply_is_a_lost_link_until_reconnected(&sim, &mut client, chl(1, 1)).await;
}

#[tokio::test]
async fn a_channel_the_server_does_not_have_is_an_identity_error() {
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 2, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    let err = client.status(&[chl(2, 1)]).await.unwrap_err();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
    assert!(err.to_string().contains("7-2-1"), "{err}");
}

/// A server that logs in, lists one channel (7-1-1) and then answers every request with
/// `reply`.
async fn scripted_server(reply: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let channel = wire::DevChannel {
            channel: wire::ChannelRef {
                ip: "127.0.0.1".into(),
                devtype: 27,
                addr: chl(1, 1),
            },
            available: true,
        };
        let mut replies = vec![
            wire::connect_reply(true).into_bytes(),
            wire::getdevinfo_reply(&[channel]).into_bytes(),
        ]
        .into_iter();
        let mut buf = Vec::new();
        loop {
            match wire::frame_end(&buf, 0) {
                Ok(Some(end)) => {
                    buf.drain(..end.frame);
                    let out = replies.next().unwrap_or_else(|| reply.clone());
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
                Ok(None) => match s.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                Err(_) => return,
            }
        }
    });
    addr
}

#[tokio::test]
async fn garbage_from_the_server_is_a_bad_reply_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let addr = scripted_server(b"<bts><cmd>getchlstatus_resp</cmd><list><status devid=\"7\" subdevid=\"1\" chlid=\"x\">working</status></list></bts>\n\n#\r\n".to_vec()).await;
    let mut client = NewareClient::connect(NewareConfig {
        timeout: TIMEOUT,
        ..NewareConfig::new(addr, dir.path())
    })
    .await
    .unwrap();
    let err = client.status(&[chl(1, 1)]).await.unwrap_err();
    assert!(matches!(err, DriverError::BadReply { .. }), "{err}");
    assert!(err.to_string().contains("chlid"), "{err}");
}

#[tokio::test]
async fn an_absurd_record_count_is_no_reason_to_allocate_it() {
    let dir = tempfile::tempdir().unwrap();
    let count = wire::inquiredf_reply(&[wire::DfItem {
        channel: wire::ChannelRef {
            ip: String::new(),
            devtype: 27,
            addr: chl(1, 1),
        },
        testid: 5,
        count: u64::MAX,
        complete: true,
    }]);
    let addr = scripted_server(count.into_bytes()).await;
    let mut client = NewareClient::connect(NewareConfig {
        timeout: TIMEOUT,
        ..NewareConfig::new(addr, dir.path())
    })
    .await
    .unwrap();
    // The download is answered with the count again: an error, after a modest allocation.
    let err = client.records(chl(1, 1), 1, usize::MAX).await.unwrap_err();
    assert!(matches!(err, DriverError::BadReply { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever a server answers once logged in, every call returns (an error, mostly) and
    /// never panics.
    #[test]
    fn arbitrary_replies_are_errors_not_panics(reply in "\\PC{0,200}", terminated in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut bytes = reply.into_bytes();
            if terminated {
                bytes.extend_from_slice(b"</bts>\n\n#\r\n");
            }
            let addr = scripted_server(bytes).await;
            let dir = tempfile::tempdir().unwrap();
            let config = NewareConfig {
                timeout: Duration::from_millis(100),
                ..NewareConfig::new(addr, dir.path())
            };
            // A login that a stalled machine did not finish within the short timeout is an
            // error too, which is all this property asks.
            let Ok(mut client) = NewareClient::connect(config).await else {
                return;
            };
            let ch = chl(1, 1);
            let _ = client.status(&[ch]).await;
            let _ = client.records(ch, 1, 10).await;
            let _ = client.stop(ch).await;
            let _ = client.start(ch, &schedule(SHORT_REST), "p").await;
        });
    }
}

#[tokio::test]
async fn a_channel_takes_test_after_test_each_started_when_the_last_ended() {
    // A supervised test runs as many segments, one after the other, on one channel.
    let clock = Clock::manual();
    let (sim, dir) = sim(&clock, 1, 1, |_| {}).await;
    let mut client = connect(&sim, dir.path()).await;
    let a = chl(1, 1);
    for n in 1..=20u32 {
        let name = format!("cyclerd-0123456789ab-{n:x}");
        client
            .start(a, &schedule(SHORT_REST), &name)
            .await
            .unwrap_or_else(|e| panic!("start {n}: {e}"));
        clock.advance(1000.0);
        let s = client.status(&[a]).await.unwrap();
        assert_eq!(s[0].state, ChannelState::Finished, "test {n}");
        // The daemon downloads each test's records and stops some of them itself.
        assert!(
            !client.records(a, 1, 1000).await.unwrap().is_empty(),
            "test {n}"
        );
        client.stop(a).await.unwrap();
        assert_eq!(s[0].test.as_deref(), Some(name.as_str()), "test {n}");
    }
}
