//! The Arbin driver against the simulated MITS console, through real TCP sockets on loopback:
//! protocols compiled to Arbin schedules, uploaded on the file port, assigned, started, run by
//! the simulated cycler and followed and backfilled by the client.

use super::common::{
    CCCV_3_CYCLES, SHORT_REST, SLOW_CHARGE, a_cut_link_gap_is_filled_exactly,
    a_delayed_reply_is_a_lost_link_until_reconnected, addr, assert_cccv_3_cycles_finished,
    assert_contiguous, assert_test_and_records, assert_wrong_password, follow_to_end,
    long_logs_read_in_pages, start_as_laid_out,
};
use super::{TIMEOUT, cell, within};
use cyclerd_drivers::arbin::wire::{self, Direction, Frame, status};
use cyclerd_drivers::arbin::{
    ArbinClient, ArbinConfig, ArbinSim, RecordLog, SimConfig, SimFault, SimHandle,
};
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Schedule};
use cyclerd_drivers::{Clock, DriverError};
use cyclerd_protocols::compile::Target;
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn schedule(yaml: &str) -> Schedule {
    super::common::schedule(yaml, Target::Arbin, "protocol")
}

/// A simulated console with `channels` channels, cells at 30 % SOC and a record every 10 s;
/// `adjust` changes the rest.
async fn console(clock: &Clock, channels: usize, adjust: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::new(channels, cell(0.3));
    adjust(&mut config);
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let files = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ArbinSim::spawn(control, files, config, clock.clone()).unwrap()
}

async fn connect(sim: &SimHandle) -> ArbinClient {
    within(
        "connecting",
        ArbinClient::connect(sim.client_config(TIMEOUT)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_compiled_cccv_protocol_runs_to_finished_and_every_record_comes_back_once() {
    let clock = Clock::manual();
    let sim = console(&clock, 2, |_| {}).await;
    let mut client = connect(&sim).await;
    assert_eq!(client.login_feedback().channels, 2);
    assert_eq!(client.channels().await.unwrap(), vec![addr(0), addr(1)]);
    let channel = addr(1);
    let schedule = schedule(CCCV_3_CYCLES);
    client
        .start(channel, &schedule, "cell-42 cccv")
        .await
        .unwrap();
    // What reached the console is the compiled schedule, under a name of this test.
    assert_eq!(
        sim.file("cell-42 cccv_protocol.sdu").as_deref(),
        Some(schedule.text.as_str())
    );
    assert_eq!(
        sim.channel(1).unwrap().schedule.as_deref(),
        Some("cell-42 cccv_protocol.sdu")
    );

    let (end, records) = follow_to_end(&mut client, channel, &clock, 600.0).await;
    assert_eq!(client.serves_record_log(), Some(true));
    assert_cccv_3_cycles_finished(&end, &records, "cell-42 cccv");
    // The device's log and what the client assembled are the same records.
    let log = sim.records(1);
    assert_eq!(log.len(), records.len());
    assert_eq!(sim.channel(1).unwrap().status, status::FINISHED);
}

#[tokio::test]
async fn records_after_a_cut_link_fill_the_gap_exactly() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let mut client = connect(&sim).await;
    let schedule = schedule(CCCV_3_CYCLES);
    a_cut_link_gap_is_filled_exactly(&sim, &mut client, &clock, addr(0), &schedule).await;
}

/// What each of 16 channels is doing.
const LAYOUT: [&str; 16] = [
    "idle", "running", "finished", "unsafe", "stopped", "paused", "error", "running", "idle",
    "stopped", "unsafe", "finished", "running", "paused", "error", "idle",
];

async fn sixteen_channels_report_their_own_states(adjust: impl FnOnce(&mut SimConfig)) {
    let clock = Clock::manual();
    let sim = console(&clock, 16, adjust).await;
    let mut client = connect(&sim).await;
    let all = client.channels().await.unwrap();
    assert_eq!(all, (0..16).map(addr).collect::<Vec<_>>());
    let state_of = |c: ChannelAddr| LAYOUT[c.channel as usize];
    let name = |c: ChannelAddr| format!("test {}", c.channel);

    start_as_laid_out(&mut client, &all, state_of, name, Target::Arbin).await;
    clock.advance(300.0);
    for &c in &all {
        match state_of(c) {
            "unsafe" => assert!(sim.set_fault(c.channel, SimFault::Unsafe, "Voltage safety")),
            "error" => assert!(sim.set_fault(c.channel, SimFault::Error, "DAQ fault")),
            "stopped" => client.stop(c).await.unwrap(),
            "paused" => assert!(sim.set_paused(c.channel, true)),
            _ => {}
        }
    }
    clock.advance(60.0);

    // Asked in a shuffled order; the console answers in its own.
    let mut asked = all.clone();
    asked.rotate_left(5);
    asked.reverse();
    let statuses = client.status(&asked).await.unwrap();
    assert_eq!(statuses.len(), 16);
    for (s, &c) in statuses.iter().zip(&asked) {
        assert_eq!(s.addr, c);
        let expected = match state_of(c) {
            "idle" => ChannelState::Idle,
            "running" => ChannelState::Running,
            "finished" => ChannelState::Finished,
            "unsafe" => ChannelState::Fault {
                reason: "Unsafe (status 0x08): Voltage safety".into(),
            },
            "error" => ChannelState::Fault {
                reason: "Error (status 0x0E): DAQ fault".into(),
            },
            "stopped" => ChannelState::Stopped,
            _ => ChannelState::Paused,
        };
        assert_eq!(s.state, expected, "channel {c}");
        let records = sim.channel(c.channel).unwrap().records;
        assert_test_and_records(s, state_of(c) == "idle", name(c), records);
    }
    // One channel asked alone is still its own.
    let one = client.status(&[addr(6)]).await.unwrap().remove(0);
    assert_eq!(one.test.as_deref(), Some("test 6"));
}

#[tokio::test]
async fn sixteen_channels_in_different_states_are_each_matched_by_their_own_index() {
    sixteen_channels_report_their_own_states(|_| {}).await;
}

#[tokio::test]
async fn channel_blocks_listed_out_of_order_still_reach_their_own_channel() {
    sixteen_channels_report_their_own_states(|c| c.reverse_info = true).await;
}

#[tokio::test]
async fn an_unsafe_channel_is_a_fault_with_its_reason_and_keeps_the_records_up_to_it() {
    let clock = Clock::manual();
    let sim = console(&clock, 4, |_| {}).await;
    let mut client = connect(&sim).await;
    let channel = addr(2);
    client
        .start(channel, &schedule(SLOW_CHARGE), "tripped")
        .await
        .unwrap();
    clock.advance(305.0);
    assert!(sim.set_fault(2, SimFault::Unsafe, "Current safety"));
    clock.advance(600.0);

    let status = client.status(&[channel]).await.unwrap().remove(0);
    assert_eq!(
        status.state,
        ChannelState::Fault {
            reason: "Unsafe (status 0x08): Current safety".into()
        }
    );
    assert!(status.state.is_terminal());
    let records = client.records(channel, 1, 10_000).await.unwrap();
    assert_contiguous(&records, 1);
    assert_eq!(records.len() as u64, status.last_record);
    // Every 10 s up to 300 s, then the moment it tripped; nothing after it.
    let last = records.last().unwrap();
    assert_eq!(records.len(), 32);
    assert!((last.test_time_s - 305.0).abs() < 1e-6, "{last:?}");
    assert!(last.current_a > 0.4, "charging until the trip: {last:?}");
    assert_eq!(sim.channel(2).unwrap().current_a, 0.0);
    assert!(
        client
            .records(channel, last.index + 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A tripped channel refuses a new start until it is cleared.
    let err = client
        .start(channel, &schedule(SHORT_REST), "again")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Refused { .. }), "{err}");
}

#[tokio::test]
async fn the_schedules_own_safety_leaves_the_channel_unsafe_with_the_reason() {
    let clock = Clock::manual();
    // A cell that starts almost full overshoots a charge's safety window at once.
    let sim = console(&clock, 1, |c| c.cells = vec![cell(1.02)]).await;
    let mut client = connect(&sim).await;
    let yaml = SLOW_CHARGE.replace("until 4.2 V", "for 1 hour");
    client
        .start(addr(0), &schedule(&yaml), "full")
        .await
        .unwrap();
    clock.advance(60.0);
    let status = client.status(&[addr(0)]).await.unwrap().remove(0);
    let ChannelState::Fault { reason } = &status.state else {
        panic!("{status:?}");
    };
    assert!(reason.starts_with("Unsafe (status 0x08): "), "{reason}");
    assert!(reason.contains('V'), "the reason names the limit: {reason}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_clear_error() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let config = ArbinConfig {
        password: "guess".into(),
        ..sim.client_config(TIMEOUT)
    };
    let err = within("logging in", ArbinClient::connect(config))
        .await
        .err()
        .unwrap();
    assert_wrong_password(err);
    // Credentials CTI cannot carry are refused before anything is sent.
    let config = ArbinConfig {
        username: "x".repeat(33),
        ..sim.client_config(TIMEOUT)
    };
    let err = ArbinClient::connect(config).await.err().unwrap();
    assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
}

/// Sends `frame` as a request on `stream` and reads one feedback frame.
async fn ask(stream: &mut TcpStream, frame: &Frame) -> Option<Frame> {
    stream
        .write_all(&frame.encode(Direction::Request))
        .await
        .unwrap();
    read_feedback(stream).await
}

/// One feedback frame, or `None` when the other side closed the connection.
async fn read_feedback(stream: &mut TcpStream) -> Option<Frame> {
    let mut buf = Vec::new();
    loop {
        if let Some((frame, used)) = wire::split_frame(&buf, Direction::Feedback).unwrap() {
            assert_eq!(used, buf.len());
            return Some(frame);
        }
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
}

fn login(sim: &SimHandle) -> Frame {
    let c = sim.client_config(TIMEOUT);
    wire::Login {
        username: c.username,
        password: c.password,
    }
    .to_frame()
}

fn info_request() -> Frame {
    wire::ChannelsInfoRequest {
        channel: -1,
        selection: wire::selection::ALL,
        need: 0,
    }
    .to_frame()
}

#[tokio::test]
async fn requests_before_login_close_the_connection() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let mut raw = TcpStream::connect(sim.control_addr()).await.unwrap();
    assert_eq!(
        within("a reply", ask(&mut raw, &info_request())).await,
        None
    );

    let mut raw = TcpStream::connect(sim.control_addr()).await.unwrap();
    let fb = within("a login", ask(&mut raw, &login(&sim)))
        .await
        .unwrap();
    let fb = wire::LoginFeedback::from_frame(&fb).unwrap();
    assert_eq!(fb.result, wire::login_result::SUCCESS);
    let info = within("a reply", ask(&mut raw, &info_request()))
        .await
        .unwrap();
    assert_eq!(
        wire::ChannelsInfo::from_frame(&info)
            .unwrap()
            .channels
            .len(),
        1
    );
}

#[tokio::test]
async fn a_request_with_a_bad_checksum_gets_no_reply_and_the_next_one_does() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let mut raw = TcpStream::connect(sim.control_addr()).await.unwrap();
    within("a login", ask(&mut raw, &login(&sim)))
        .await
        .unwrap();
    let mut corrupt = wire::StopTest {
        channel: 0,
        all: false,
    }
    .to_frame()
    .encode(Direction::Request);
    let n = corrupt.len();
    corrupt[n - 1] ^= 0x55;
    raw.write_all(&corrupt).await.unwrap();
    // The first feedback to arrive answers the channel info, not the corrupt stop.
    let fb = within("a reply", ask(&mut raw, &info_request()))
        .await
        .unwrap();
    assert_eq!(
        fb.command,
        wire::feedback_code(wire::cmd::GET_CHANNELS_INFO)
    );
}

#[tokio::test]
async fn uploads_are_checked_by_md5_and_served_on_the_file_port_only() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let text = schedule(SHORT_REST).text;
    let mut package = wire::Upload::packages("rest.sdu", text.as_bytes(), 1 << 20).remove(0);

    // On the control port an upload is an unknown command.
    let mut control = TcpStream::connect(sim.control_addr()).await.unwrap();
    within("a login", ask(&mut control, &login(&sim)))
        .await
        .unwrap();
    let fb = within("a reply", ask(&mut control, &package.to_frame()))
        .await
        .unwrap();
    assert_eq!(
        fb.command,
        cyclerd_drivers::arbin::sim::UNKNOWN_COMMAND_FEEDBACK
    );

    let mut files = TcpStream::connect(sim.file_addr()).await.unwrap();
    within("a login", ask(&mut files, &login(&sim)))
        .await
        .unwrap();
    let good_md5 = std::mem::replace(&mut package.md5, wire::md5_hex(b"other"));
    let fb = within("a reply", ask(&mut files, &package.to_frame()))
        .await
        .unwrap();
    let fb = wire::UploadFeedback::from_frame(&fb).unwrap();
    assert_eq!(fb.result, wire::upload_result::MD5_ERROR);
    assert_eq!(sim.file("rest.sdu"), None);

    package.md5 = good_md5;
    let fb = within("a reply", ask(&mut files, &package.to_frame()))
        .await
        .unwrap();
    let fb = wire::UploadFeedback::from_frame(&fb).unwrap();
    assert_eq!(fb.result, wire::upload_result::SUCCESS);
    assert_eq!(sim.file("REST.SDU"), Some(text));
    // Another file under the same name is refused, the same one again accepted.
    let other = wire::Upload::packages("rest.sdu", b"[Schedule]", 1 << 20).remove(0);
    let fb = within("a reply", ask(&mut files, &other.to_frame()))
        .await
        .unwrap();
    let fb = wire::UploadFeedback::from_frame(&fb).unwrap();
    assert_eq!(fb.result, wire::upload_result::EXISTS_DIFFERENT_MD5);
    let fb = within("a reply", ask(&mut files, &package.to_frame()))
        .await
        .unwrap();
    let fb = wire::UploadFeedback::from_frame(&fb).unwrap();
    assert_eq!(fb.result, wire::upload_result::EXISTS_SAME_MD5);
}

#[tokio::test]
async fn start_refusals_are_clear_errors_and_keep_the_link() {
    let clock = Clock::manual();
    let sim = console(&clock, 2, |_| {}).await;
    let mut client = connect(&sim).await;
    client
        .start(addr(0), &schedule(SLOW_CHARGE), "first")
        .await
        .unwrap();
    clock.advance(60.0);
    // A running channel refuses the assignment of another schedule.
    let err = client
        .start(addr(0), &schedule(SHORT_REST), "second")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("running"), "{err}");
    // A channel the console does not have is a configuration error.
    let err = client
        .start(addr(7), &schedule(SHORT_REST), "nowhere")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
    assert!(err.to_string().contains("index 7"), "{err}");
    let err = client.status(&[addr(7)]).await.unwrap_err();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
    // A busy Monitor & Control window refuses commands for a while.
    sim.fail_next(1);
    let err = client.stop(addr(0)).await.unwrap_err();
    assert!(err.to_string().contains("Monitor & Control"), "{err}");
    assert!(!err.is_link_lost());
    client.stop(addr(0)).await.unwrap();
    let s = client.status(&[addr(0), addr(1)]).await.unwrap();
    assert_eq!(s[0].state, ChannelState::Stopped);
    assert_eq!(s[1].state, ChannelState::Idle);
    // A stopped channel takes a new test.
    client
        .start(addr(0), &schedule(SHORT_REST), "third")
        .await
        .unwrap();
    assert_eq!(
        client.status(&[addr(0)]).await.unwrap()[0].test.as_deref(),
        Some("third")
    );
}

#[tokio::test]
async fn schedules_travel_in_packages_checked_by_md5_and_a_failed_upload_is_refused() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let config = ArbinConfig {
        upload_package_len: 100,
        ..sim.client_config(TIMEOUT)
    };
    let mut client = ArbinClient::connect(config).await.unwrap();
    let schedule = schedule(CCCV_3_CYCLES);
    assert!(schedule.text.len() > 1000, "several packages");
    client.start(addr(0), &schedule, "packaged").await.unwrap();
    assert_eq!(
        sim.file("packaged_protocol.sdu").as_deref(),
        Some(schedule.text.as_str())
    );
    client.stop(addr(0)).await.unwrap();

    sim.fail_next(1);
    let err = client
        .start(addr(0), &schedule, "unlucky")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DriverError::Refused {
                during: "uploading the schedule",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sim.file("unlucky_protocol.sdu"), None);
    assert_eq!(
        sim.channel(0).unwrap().test.as_deref(),
        Some("packaged"),
        "nothing started"
    );
}

#[tokio::test]
async fn long_logs_are_read_in_pages_from_any_record() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |c| c.record_interval_s = 1.0).await;
    let mut client = connect(&sim).await;
    let channel = addr(0);
    client
        .start(channel, &schedule(SLOW_CHARGE), "long")
        .await
        .unwrap();
    long_logs_read_in_pages(&mut client, &clock, channel).await;
}

async fn falls_back_to_present_values(record_log: RecordLog) {
    let clock = Clock::manual();
    let sim = console(&clock, 2, |c| c.record_log = record_log).await;
    let config = ArbinConfig {
        timeout: Duration::from_millis(300),
        ..sim.client_config(TIMEOUT)
    };
    let mut client = ArbinClient::connect(config).await.unwrap();
    let channel = addr(1);
    client
        .start(channel, &schedule(SLOW_CHARGE), "present")
        .await
        .unwrap();
    clock.advance(100.0);
    let status = within("a status", client.status(&[channel]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(client.serves_record_log(), Some(false));
    assert_eq!(status.state, ChannelState::Running);
    assert_eq!(status.last_record, 1);
    let first = client.records(channel, 1, 100).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].index, 1);
    assert!((first[0].test_time_s - 100.0).abs() < 1e-6, "{first:?}");
    assert!((first[0].current_a - 0.5).abs() < 1e-3, "{first:?}");
    assert!(first[0].temperature_c.is_some());
    assert!(first[0].step > 0 && first[0].cycle == 1, "{first:?}");
    // Nothing new until the channel's test time moves on.
    assert!(client.records(channel, 2, 100).await.unwrap().is_empty());
    assert_eq!(client.status(&[channel]).await.unwrap()[0].last_record, 1);
    clock.advance(50.0);
    assert_eq!(client.status(&[channel]).await.unwrap()[0].last_record, 2);
    let second = client.records(channel, 2, 100).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].index, 2);
    assert!((second[0].test_time_s - 150.0).abs() < 1e-6);
    // The idle channel has nothing.
    assert!(client.records(addr(0), 1, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_console_that_refuses_the_record_log_is_followed_by_its_present_values() {
    falls_back_to_present_values(RecordLog::Refused).await;
}

#[tokio::test]
async fn a_console_that_ignores_the_record_log_is_followed_by_its_present_values() {
    falls_back_to_present_values(RecordLog::Ignored).await;
}

#[tokio::test]
async fn delayed_replies_time_out_as_lost_links() {
    let clock = Clock::manual();
    let sim = console(&clock, 1, |_| {}).await;
    let config = ArbinConfig {
        timeout: Duration::from_millis(300),
        ..sim.client_config(TIMEOUT)
    };
    let mut client = ArbinClient::connect(config).await.unwrap();
    a_delayed_reply_is_a_lost_link_until_reconnected(&sim, &mut client, addr(0)).await;
}

/// A server on two ports that logs in anyone and then answers every request with `reply`
/// (bytes sent as they are); the client waits at most `timeout` for a reply.
async fn scripted_console(reply: Vec<u8>, timeout: Duration) -> ArbinConfig {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let files = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ArbinConfig {
        control_port: control.local_addr().unwrap().port(),
        file_port: files.local_addr().unwrap().port(),
        timeout,
        ..ArbinConfig::new(control.local_addr().unwrap().ip(), "u", "p")
    };
    for listener in [control, files] {
        let reply = reply.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let login = wire::LoginFeedback {
                        result: wire::login_result::SUCCESS,
                        serial: "x".into(),
                        version: 1,
                        allow_control: 1,
                        channels: 1,
                    }
                    .to_frame()
                    .encode(Direction::Feedback);
                    let mut replies = std::iter::once(login);
                    let mut buf = Vec::new();
                    loop {
                        match wire::split_frame(&buf, Direction::Request) {
                            Ok(Some((_, used))) => {
                                buf.drain(..used);
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
            }
        });
    }
    config
}

#[tokio::test]
async fn a_feedback_with_a_bad_checksum_is_a_bad_reply_that_drops_the_link() {
    let mut bytes = wire::ChannelsInfo::default()
        .to_frame()
        .encode(Direction::Feedback);
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    let mut client = ArbinClient::connect(scripted_console(bytes, TIMEOUT).await)
        .await
        .unwrap();
    let err = client.channels().await.unwrap_err();
    assert!(matches!(err, DriverError::BadReply { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let err = client.channels().await.unwrap_err();
    assert!(matches!(err, DriverError::Link { .. }), "{err}");
}

#[tokio::test]
async fn a_block_for_another_channel_is_never_taken_for_the_one_asked() {
    // A console that only ever reports channel 0, as the open client's bug read it.
    let reply = wire::ChannelsInfo {
        channels: vec![wire::ChannelInfo {
            channel: 0,
            test_name: "channel zero".into(),
            status: status::CHARGE,
            ..wire::ChannelInfo::default()
        }],
    }
    .to_frame()
    .encode(Direction::Feedback);
    let mut client = ArbinClient::connect(scripted_console(reply, TIMEOUT).await)
        .await
        .unwrap();
    let err = client.status(&[addr(5)]).await.unwrap_err();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
    assert!(err.to_string().contains("index 5"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever a console answers once logged in, every call returns (an error, mostly) and
    /// never panics.
    #[test]
    fn arbitrary_replies_are_errors_not_panics(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        command in proptest::sample::select(vec![
            wire::feedback_code(wire::cmd::GET_CHANNELS_INFO),
            wire::feedback_code(wire::cmd::GET_RECORDS),
            wire::feedback_code(wire::cmd::START),
            wire::feedback_code(wire::cmd::UPLOAD),
            0x1234_5678,
        ]),
        framed in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let bytes = if framed {
                Frame::new(command, body).encode(Direction::Feedback)
            } else {
                body
            };
            // Replies that never complete cost a whole timeout each: keep it short, and let a
            // login that a stalled machine did not finish in time count as an error too.
            let config = scripted_console(bytes, Duration::from_millis(200)).await;
            let Ok(mut client) = ArbinClient::connect(config).await else {
                return;
            };
            let c = addr(0);
            let _ = client.channels().await;
            let _ = client.reconnect().await;
            let _ = client.status(&[c]).await;
            let _ = client.reconnect().await;
            let _ = client.records(c, 1, 10).await;
            let _ = client.reconnect().await;
            let _ = client.stop(c).await;
            let _ = client.reconnect().await;
            let _ = client.start(c, &schedule(SHORT_REST), "p").await;
        });
    }

    /// Whatever a client sends, the console goes on serving other connections.
    #[test]
    fn arbitrary_requests_do_not_stop_the_console(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        command in proptest::sample::select(vec![
            wire::cmd::LOGIN,
            wire::cmd::GET_CHANNELS_INFO,
            wire::cmd::ASSIGN_SCHEDULE,
            wire::cmd::START,
            wire::cmd::STOP,
            wire::cmd::UPLOAD,
            wire::cmd::GET_RECORDS,
        ]),
        logged_in in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = Clock::manual();
            let sim = console(&clock, 2, |_| {}).await;
            for addr in [sim.control_addr(), sim.file_addr()] {
                let mut raw = TcpStream::connect(addr).await.unwrap();
                if logged_in {
                    within("a login", ask(&mut raw, &login(&sim))).await.unwrap();
                }
                // The console may close the connection at once: writes may fail.
                let _ = raw
                    .write_all(&Frame::new(command, body.clone()).encode(Direction::Request))
                    .await;
                let _ = raw.write_all(&body).await;
            }
            let mut client = connect(&sim).await;
            prop_assert_eq!(client.channels().await.unwrap().len(), 2);
            Ok(())
        })?;
    }
}
