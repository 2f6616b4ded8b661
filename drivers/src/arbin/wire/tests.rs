//! Tests of the CTI codecs: captured frames, round trips, and arbitrary input that never makes
//! a decoder panic.

use super::*;
use proptest::prelude::*;

fn roundtrip(frame: &Frame, dir: Direction) -> Frame {
    let bytes = frame.encode(dir);
    let (back, used) = split_frame(&bytes, dir).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    back
}

#[test]
fn the_stop_request_matches_the_captured_frame() {
    let bytes = StopTest {
        channel: 13,
        all: false,
    }
    .to_frame()
    .encode(Direction::Request);
    assert_eq!(bytes.len(), 128);
    assert_eq!(
        &bytes[..8],
        &[0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0x11]
    );
    assert_eq!(&bytes[8..12], &0x74u32.to_le_bytes());
    assert_eq!(&bytes[12..16], &[0x01, 0x00, 0x31, 0xBB]);
    assert_eq!(&bytes[16..20], &[0; 4]);
    assert_eq!(&bytes[20..24], &13u32.to_le_bytes());
    // 7 x 0xDD + 0x11 + 0x74 + 0x01 + 0x31 + 0xBB + 13.
    assert_eq!(&bytes[126..], &0x078Au16.to_le_bytes());
}

#[test]
fn request_lengths_match_the_open_clients_templates() {
    let login = Login {
        username: "u".into(),
        password: "p".into(),
    };
    let info = ChannelsInfoRequest {
        channel: 5,
        selection: selection::ALL,
        need: 0,
    };
    let assign = AssignSchedule {
        channel: 0,
        all: false,
        schedule: "a.sdu".into(),
        test_capacity_ah: 1.0,
        barcode: String::new(),
        user_variables: [0.0; 16],
    };
    let start = StartTest {
        test_name: "t".into(),
        channels: vec![3],
    };
    for (frame, length) in [
        (login.to_frame(), 74),
        (info.to_frame(), 50),
        (assign.to_frame(), 659),
        (start.to_frame(), 160),
    ] {
        let bytes = frame.encode(Direction::Request);
        assert_eq!(bytes.len(), length + 12, "{frame}");
        assert_eq!(&bytes[8..12], &(length as u32).to_le_bytes(), "{frame}");
    }
}

#[test]
fn feedback_lengths_count_the_whole_frame() {
    let common = CommonFeedback {
        command: cmd::STOP,
        channel: 2,
        result: 0,
    }
    .to_frame()
    .encode(Direction::Feedback);
    assert_eq!(common.len(), COMMON_FEEDBACK_LEN);
    assert_eq!(&common[8..12], &128u32.to_le_bytes());
    assert_eq!(&common[12..16], &0xBB13_0001u32.to_le_bytes());
    let login = LoginFeedback {
        result: 1,
        serial: "SN1".into(),
        version: 1,
        allow_control: 1,
        channels: 16,
    }
    .to_frame()
    .encode(Direction::Feedback);
    assert_eq!(login.len(), LOGIN_FEEDBACK_LEN);
    // The channel count sits at byte 8664, as the open client reads it.
    assert_eq!(&login[8664..8668], &16u32.to_le_bytes());
    let one = ChannelsInfo {
        channels: vec![ChannelInfo::default()],
    }
    .to_frame()
    .encode(Direction::Feedback);
    assert_eq!(one.len(), 1779);
    // Sixteen channels, as a MITS 10 server answered a one-channel request.
    let sixteen = ChannelsInfo {
        channels: vec![ChannelInfo::default(); 16],
    }
    .to_frame()
    .encode(Direction::Feedback);
    assert_eq!(sixteen.len(), 28074);
}

#[test]
fn feedback_codes_swap_the_nibbles_of_the_second_byte() {
    assert_eq!(feedback_code(0xEEAB_0001), 0xEEBA_0001);
    assert_eq!(feedback_code(0xBB31_0001), 0xBB13_0001);
    assert_eq!(feedback_code(cmd::ASSIGN_SCHEDULE), 0xBB12_0001);
    assert_eq!(feedback_code(cmd::START), 0xBB23_0004);
    assert_eq!(feedback_code(cmd::UPLOAD), 0xCC31_0003);
    assert_eq!(
        feedback_code(feedback_code(cmd::GET_RECORDS)),
        cmd::GET_RECORDS
    );
}

#[test]
fn channel_blocks_sit_at_the_open_clients_offsets() {
    let info = ChannelInfo {
        channel: 6,
        status: status::CHARGE,
        test_name: "cell".into(),
        test_time_s: 12.5,
        voltage_v: 3.7,
        aux: std::array::from_fn(|k| {
            if k == aux::TEMPERATURE {
                vec![AuxValue {
                    value: 25.0,
                    dxdt: 0.0,
                }]
            } else {
                Vec::new()
            }
        }),
        ..ChannelInfo::default()
    };
    let bytes = ChannelsInfo {
        channels: vec![info.clone()],
    }
    .to_frame()
    .encode(Direction::Feedback);
    assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
    assert_eq!(&bytes[24..28], &6u32.to_le_bytes());
    assert_eq!(&bytes[28..30], &2i16.to_le_bytes());
    assert_eq!(&bytes[431..439], b"c\0e\0l\0l\0");
    assert_eq!(&bytes[1685..1693], &12.5f64.to_le_bytes());
    assert_eq!(&bytes[1701..1705], &3.7f32.to_le_bytes());
    assert_eq!(&bytes[1751..1753], &1u16.to_le_bytes());
    assert_eq!(&bytes[1777..1781], &25.0f32.to_le_bytes());
    assert_eq!(bytes.len(), 1779 + 8);
    let back = ChannelsInfo::from_frame(&roundtrip(
        &ChannelsInfo {
            channels: vec![info.clone()],
        }
        .to_frame(),
        Direction::Feedback,
    ))
    .unwrap();
    assert_eq!(back.channels, vec![info.clone()]);
    assert_eq!(back.channels[0].temperature_c(), Some(25.0));
}

#[test]
fn every_message_survives_its_encoder_and_decoder() {
    let login = Login {
        username: "admin".into(),
        password: "secret".into(),
    };
    assert_eq!(
        Login::from_frame(&roundtrip(&login.to_frame(), Direction::Request)).unwrap(),
        login
    );
    let fb = LoginFeedback {
        result: login_result::SUCCESS,
        serial: "ARBIN-42".into(),
        version: 3,
        allow_control: 1,
        channels: 16,
    };
    assert_eq!(
        LoginFeedback::from_frame(&roundtrip(&fb.to_frame(), Direction::Feedback)).unwrap(),
        fb
    );
    let info = ChannelsInfoRequest {
        channel: -1,
        selection: selection::ALL,
        need: need::AUX,
    };
    assert_eq!(
        ChannelsInfoRequest::from_frame(&roundtrip(&info.to_frame(), Direction::Request)).unwrap(),
        info
    );
    let assign = AssignSchedule {
        channel: 7,
        all: false,
        schedule: "cell-1_cccv.sdu".into(),
        test_capacity_ah: 2.5,
        barcode: "B1".into(),
        user_variables: std::array::from_fn(|i| i as f32),
    };
    assert_eq!(
        AssignSchedule::from_frame(&roundtrip(&assign.to_frame(), Direction::Request)).unwrap(),
        assign
    );
    let start = StartTest {
        test_name: "ünïcode 电池".into(),
        channels: vec![1, 15],
    };
    assert_eq!(
        StartTest::from_frame(&roundtrip(&start.to_frame(), Direction::Request)).unwrap(),
        start
    );
    let common = CommonFeedback {
        command: cmd::START,
        channel: 4,
        result: result::START_NO_SCHEDULE,
    };
    let back = roundtrip(&common.to_frame(), Direction::Feedback);
    assert_eq!(
        CommonFeedback::from_frame(&back, cmd::START).unwrap(),
        common
    );
    assert!(CommonFeedback::from_frame(&back, cmd::STOP).is_err());
    for upload in Upload::packages("x.sdu", b"0123456789", 4) {
        assert_eq!(
            Upload::from_frame(&roundtrip(&upload.to_frame(), Direction::Request)).unwrap(),
            upload
        );
    }
    let ufb = UploadFeedback {
        result: upload_result::SUCCESS,
        time: 0.0,
        package_count: 3,
        package_index: 2,
    };
    assert_eq!(
        UploadFeedback::from_frame(&roundtrip(&ufb.to_frame(), Direction::Feedback)).unwrap(),
        ufb
    );
    let req = RecordsRequest {
        channel: 3,
        from: 17,
        max: 100,
    };
    assert_eq!(
        RecordsRequest::from_frame(&roundtrip(&req.to_frame(), Direction::Request)).unwrap(),
        req
    );
    let rec = DataRecord {
        index: 17,
        test_time_s: 170.0,
        step_time_s: 10.0,
        voltage_v: 3.9,
        current_a: -1.25,
        step_capacity_ah: 0.1,
        step_energy_wh: 0.4,
        temperature_c: 25.5,
        step: 3,
        cycle: 2,
    };
    let rfb = RecordsFeedback {
        channel: 3,
        result: result::OK,
        last: 40,
        records: vec![rec; 3],
    };
    assert_eq!(
        RecordsFeedback::from_frame(&roundtrip(&rfb.to_frame(), Direction::Feedback)).unwrap(),
        rfb
    );
}

#[test]
fn uploads_are_cut_into_packages_that_carry_the_whole_files_md5() {
    let data: Vec<u8> = (0..10u8).collect();
    let packages = Upload::packages("dir\\a.sdu", &data, 4);
    assert_eq!(packages.len(), 3);
    assert!(
        packages
            .iter()
            .all(|p| p.package_count == 3 && p.file_len == 10)
    );
    assert_eq!(
        packages.iter().map(|p| p.package_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let joined: Vec<u8> = packages.iter().flat_map(|p| p.data.clone()).collect();
    assert_eq!(joined, data);
    assert_eq!(packages[0].md5, md5_hex(&data));
    assert_eq!(Upload::packages("e", b"", 4).len(), 1);
}

#[test]
fn md5_matches_the_rfc_test_suite() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        md5_hex(b"The quick brown fox jumps over the lazy dog"),
        "9e107d9d372bb6826bd81d3542a419d6"
    );
    assert_eq!(
        md5_hex(
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
        ),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}

#[test]
fn strings_are_fixed_width_and_always_terminated() {
    let wide = encode_wide("abc", 3);
    assert_eq!(wide, [b'a', 0, b'b', 0, 0, 0]);
    assert_eq!(decode_wide(&wide), "ab");
    // A surrogate pair is never split.
    assert_eq!(decode_wide(&encode_wide("a😀", 4)), "a😀");
    assert_eq!(decode_wide(&encode_wide("a😀", 3)), "a");
    assert_eq!(decode_wide(&[0x3D, 0xD8, 0x41, 0x00]), "\u{FFFD}A");
    assert_eq!(encode_ascii("admin", 8), b"admin\0\0\0");
    assert_eq!(decode_ascii(b"admin\0xx"), "admin");
    assert!(fits_ascii(&"a".repeat(32), 32));
    assert!(!fits_ascii(&"a".repeat(33), 32));
    assert!(!fits_ascii("pässword", 32));
}

#[test]
fn long_test_names_are_fitted_and_stay_distinct() {
    assert_eq!(test_name("cell-1"), "cell-1");
    let a = "x".repeat(100) + "a";
    let b = "x".repeat(100) + "b";
    let (fa, fb) = (test_name(&a), test_name(&b));
    assert_eq!(fa.encode_utf16().count(), TEST_NAME_CHARS - 1);
    assert_ne!(fa, fb);
    assert_eq!(decode_wide(&encode_wide(&fa, TEST_NAME_CHARS)), fa);
}

#[test]
fn step_and_cycle_are_read_from_the_display_text() {
    let info = |text: &str| ChannelInfo {
        step_and_cycle_text: text.into(),
        ..ChannelInfo::default()
    };
    assert_eq!(info("Step 3, Cycle 2").step_and_cycle(), (3, 2));
    assert_eq!(info("7/12").step_and_cycle(), (7, 12));
    assert_eq!(info("").step_and_cycle(), (0, 0));
}

#[test]
fn broken_frames_are_named_errors() {
    let good = StopTest {
        channel: 1,
        all: false,
    }
    .to_frame()
    .encode(Direction::Request);
    assert_eq!(split_frame(&good[..50], Direction::Request), Ok(None));
    let mut bad = good.clone();
    bad[30] ^= 1;
    assert!(matches!(
        split_frame(&bad, Direction::Request),
        Err(WireError::Checksum { frame_len: 128, .. })
    ));
    let mut token = good.clone();
    token[0] = 0;
    assert!(matches!(
        split_frame(&token, Direction::Request),
        Err(WireError::Token { .. })
    ));
    // The same bytes read as a feedback announce 116 bytes, too short for what follows.
    assert!(split_frame(&good, Direction::Feedback).is_err());
    let mut huge = good;
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        split_frame(&huge, Direction::Request),
        Err(WireError::FrameLength { .. })
    ));
}

#[test]
fn a_channel_count_larger_than_the_frame_is_refused_before_allocating() {
    let frame = Frame::new(
        feedback_code(cmd::GET_CHANNELS_INFO),
        u32::MAX.to_le_bytes().to_vec(),
    );
    assert!(ChannelsInfo::from_frame(&frame).is_err());
    let mut args = vec![0u8; 17];
    args[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    let frame = Frame::new(feedback_code(cmd::GET_RECORDS), args);
    assert!(RecordsFeedback::from_frame(&frame).is_err());
}

/// Runs every decoder on `frame`.
fn decode_all(frame: &Frame) {
    let _ = Login::from_frame(frame);
    let _ = LoginFeedback::from_frame(frame);
    let _ = ChannelsInfoRequest::from_frame(frame);
    let _ = ChannelsInfo::from_frame(frame);
    let _ = AssignSchedule::from_frame(frame);
    let _ = StartTest::from_frame(frame);
    let _ = StopTest::from_frame(frame);
    for command in [cmd::ASSIGN_SCHEDULE, cmd::START, cmd::STOP] {
        let _ = CommonFeedback::from_frame(frame, command);
    }
    let _ = Upload::from_frame(frame);
    let _ = UploadFeedback::from_frame(frame);
    let _ = RecordsRequest::from_frame(frame);
    let _ = RecordsFeedback::from_frame(frame);
}

const COMMANDS: [u32; 9] = [
    cmd::LOGIN,
    cmd::GET_CHANNELS_INFO,
    cmd::ASSIGN_SCHEDULE,
    cmd::START,
    cmd::STOP,
    cmd::UPLOAD,
    cmd::GET_RECORDS,
    feedback_code(cmd::GET_CHANNELS_INFO),
    feedback_code(cmd::GET_RECORDS),
];

proptest! {
    #[test]
    fn arbitrary_bytes_give_errors_not_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..4000),
    ) {
        for dir in [Direction::Request, Direction::Feedback] {
            if let Ok(Some((frame, used))) = split_frame(&bytes, dir) {
                prop_assert!(used <= bytes.len());
                decode_all(&frame);
            }
        }
        for command in COMMANDS {
            decode_all(&Frame::new(command, bytes.clone()));
            decode_all(&Frame::new(feedback_code(command), bytes.clone()));
        }
        let _ = decode_wide(&bytes);
        let _ = decode_ascii(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_give_errors_not_panics(
        command in proptest::sample::select(COMMANDS.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..2500),
    ) {
        for dir in [Direction::Request, Direction::Feedback] {
            let bytes = Frame::new(command, body.clone()).encode(dir);
            let (frame, used) = split_frame(&bytes, dir).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            decode_all(&frame);
            decode_all(&Frame::new(feedback_code(command), body.clone()));
        }
    }

    #[test]
    fn fitted_names_always_fit(name in "\\PC{0,120}") {
        let fitted = fit(&name, TEST_NAME_CHARS);
        prop_assert!(fitted.encode_utf16().count() < TEST_NAME_CHARS);
        // Text after a NUL cannot travel in a C string.
        let sent = fitted.split('\0').next().unwrap_or_default();
        prop_assert_eq!(decode_wide(&encode_wide(&fitted, TEST_NAME_CHARS)), sent);
    }
}
