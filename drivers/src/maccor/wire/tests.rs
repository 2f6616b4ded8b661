//! Unit tests of the MacNet codecs, against the layouts the facts give.

use super::*;
use serde_json::json;

fn reading() -> Reading {
    Reading {
        rf1: rf1::DISCHARGE,
        rf2: 132,
        stat: stat::ACTIVE,
        last_rec: 4225,
        cycle: 2,
        step: 5,
        test_time_s: 212.25,
        step_time_s: 209.5,
        capacity_ah: 0.75,
        energy_wh: 2.5,
        current_a: 1.25,
        voltage_v: 3.859375,
        tester_time_ms: Some(1_665_664_376_000),
    }
}

#[test]
fn the_direct_output_frame_is_hhhhffffbb_with_len_18() {
    let out = Output {
        current_a: 1.5,
        voltage_v: 4.2,
        power_w: IGNORE,
        resistance_ohm: 0.0,
        range: 4,
        mode: Mode::Rest,
    };
    let bytes = out.to_frame(3).encode();
    assert_eq!(bytes.len(), 8 + 18);
    assert_eq!(&bytes[..8], &[6, 0, 8, 0, 3, 0, 18, 0]);
    assert_eq!(&bytes[8..12], &1.5f32.to_le_bytes());
    assert_eq!(&bytes[12..16], &4.2f32.to_le_bytes());
    assert_eq!(bytes[24], 4);
    assert_eq!(bytes[25], b'R');
    let (frame, used) = split_frame(&bytes, Direction::Request).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(Output::from_frame(&frame).unwrap(), out);
}

#[test]
fn the_start_frame_is_186_bytes_with_space_padded_names() {
    let start = StartTest {
        test_name: "cell-42".into(),
        procedure: "CCCV".into(),
        comment: "cyclerd".into(),
        c_rate: 1.0,
        chamber: 0,
    };
    let frame = start.to_frame(5);
    assert_eq!(frame.len, 186);
    assert_eq!(&frame.data[..25], b"cell-42                  ");
    assert_eq!(&frame.data[25..29], b"CCCV");
    assert_eq!(&frame.data[130..134], &1.0f32.to_le_bytes());
    assert_eq!(StartTest::from_frame(&frame).unwrap(), start);
    assert_eq!(StartTest::from_json(&start.to_json()).unwrap(), start);
}

#[test]
fn a_reading_is_46_bytes_in_the_documented_order() {
    let r = reading();
    let bytes = r.to_bytes();
    assert_eq!(bytes.len(), READING_LEN);
    assert_eq!(bytes[0], rf1::DISCHARGE);
    assert_eq!(&bytes[2..4], &stat::ACTIVE.to_le_bytes());
    assert_eq!(&bytes[4..8], &4225u32.to_le_bytes());
    assert_eq!(&bytes[12..14], &5u16.to_le_bytes());
    assert_eq!(&bytes[34..38], &3.859375f32.to_le_bytes());
    assert_eq!(Reading::from_bytes(&bytes).unwrap(), r);
    assert_eq!(Reading::from_json(&r.to_json(3)).unwrap(), r);
}

#[test]
fn a_discharge_magnitude_reads_back_negative() {
    let r = reading();
    assert_eq!(r.signed_current(), -1.25);
    let signed = Reading {
        current_a: -1.25,
        ..r
    };
    assert_eq!(signed.signed_current(), -1.25);
    let charge = Reading {
        rf1: rf1::CHARGE,
        ..r
    };
    assert_eq!(charge.signed_current(), 1.25);
}

#[test]
fn the_public_json_reading_example_decodes() {
    let line = r#"{"jsonrpc":"2.0","result":{"FClass":4,"FNum":7,"Chan":93,"RF1":0,"RF2":192,"Stat":0,"LastRecNum":4225,"Cycle":0,"Step":5,"TestTime":212.199996948242,"StepTime":209.889999389648,"Capacity":0,"Energy":0,"Current":0,"Voltage":3.85938811302185,"TesterTime":"2022-10-13T12:32:56"},"id":1987}"#;
    let JsonReply::Result {
        id,
        function,
        chan,
        fields,
    } = parse_json_reply(line).unwrap()
    else {
        panic!("not a result")
    };
    assert_eq!((id, function, chan), (Some(1987), READING, Some(93)));
    let r = Reading::from_json(&fields).unwrap();
    assert_eq!(r.last_rec, 4225);
    assert_eq!(r.step, 5);
    assert_eq!(
        r.tester_time_ms.map(iso8601_from_ms).as_deref(),
        Some("2022-10-13T12:32:56")
    );
}

#[test]
fn status_blocks_round_trip_in_both_encodings() {
    let block = StatusBlock {
        first: 4,
        entries: vec![
            ChannelStat {
                rf1: 1,
                rf2: 0,
                stat: stat::ACTIVE,
            },
            ChannelStat {
                rf1: rf1::PROBLEM,
                rf2: rf2::VOLTAGE_SAFETY,
                stat: stat::PROBLEM,
            },
        ],
    };
    let frame = block.to_frame();
    assert_eq!(frame.len, 8);
    assert_eq!(StatusBlock::from_frame(&frame).unwrap(), block);
    assert_eq!(StatusBlock::from_json(&block.to_json()).unwrap(), block);
}

#[test]
fn version_system_info_and_direct_start_round_trip() {
    let v = Version {
        api: 1,
        exe: [3, 2, 18],
        dll: [3, 2, 18],
    };
    assert_eq!(Version::from_bytes(&v.to_bytes()).unwrap(), v);
    assert_eq!(Version::from_json(&v.to_json()).unwrap(), v);
    let info = SystemInfo {
        system_id: "Win10".into(),
        system_type: 0,
        controller_boards: 3,
        test_channels: 12,
        aux_boards: 1,
        aux_channels: 128,
    };
    assert_eq!(SystemInfo::from_bytes(&info.to_bytes()).unwrap(), info);
    assert_eq!(SystemInfo::from_json(&info.to_json()).unwrap(), info);
    let d = DirectStart {
        test_name: "direct-1".into(),
        output: Output::rest(4),
        record_every_s: 1.0,
        record_dv: 0.0,
        record_di: 0.0,
    };
    assert_eq!(DirectStart::from_frame(&d.to_frame(2)).unwrap(), d);
    assert_eq!(DirectStart::from_json(&d.to_json()).unwrap(), d);
}

#[test]
fn transfer_packets_round_trip() {
    for p in [
        Packet::Read {
            file_type: FILE_TYPE_RECORD_LOG,
            from: 7,
            max: 100,
        },
        Packet::Write {
            file_type: FILE_TYPE_PROCEDURE,
            name: "CCCV.000".into(),
        },
        Packet::Data {
            block: 2,
            bytes: vec![1; BLOCK_SIZE],
        },
        Packet::Ack { block: 0 },
        Packet::Error {
            code: transfer_error::ILLEGAL_OPERATION,
            message: "no".into(),
        },
    ] {
        assert_eq!(Packet::from_frame(&p.to_frame(0)).unwrap(), p);
    }
    let too_big = Packet::Data {
        block: 1,
        bytes: vec![0; BLOCK_SIZE + 1],
    };
    assert!(Packet::from_bytes(&too_big.to_bytes()).is_err());
}

#[test]
fn result_codes_read_in_any_width_and_as_json_text() {
    for data in [vec![23], vec![23, 0], vec![23, 0, 0, 0]] {
        let f = Frame::with_data(SELECT, 1, data);
        assert_eq!(decode_result(&f).unwrap(), 23);
    }
    assert!(decode_result(&Frame::with_data(SELECT, 1, vec![])).is_err());
    let ok = json_result_field(0);
    assert_eq!(json_result_code(&ok).unwrap(), 0);
    let mut text = Map::new();
    text.insert("Result".into(), "19".into());
    assert_eq!(json_result_code(&text).unwrap(), 19);
    assert!(describe_result(ResultKind::Command, 19).contains("not unique"));
}

#[test]
fn json_requests_name_their_function_and_bad_ones_get_macnet_errors() {
    let line = json_request(7, READING, Some(3), Map::new());
    assert!(line.ends_with("\r\n"));
    let req = parse_json_request(&line).unwrap();
    assert_eq!(
        (req.function, req.chan, req.id),
        (READING, Some(3), json!(7))
    );
    assert_eq!(
        parse_json_request("{nope").unwrap_err().1,
        json_error::PARSE_ERROR
    );
    let no_class = r#"{"jsonrpc":"2.0","method":"MacNet","params":{"FNum":1},"id":1}"#;
    assert_eq!(
        parse_json_request(no_class).unwrap_err(),
        (json!(1), json_error::INVALID_PARAMS)
    );
    let err = parse_json_reply(&json_error_line(&json!(5), json_error::INVALID_FCLASS)).unwrap();
    assert_eq!(
        err,
        JsonReply::Error {
            id: Some(5),
            code: -32001,
            message: "Invalid FClass".into()
        }
    );
}

#[test]
fn short_names_fit_25_bytes_and_stay_unique() {
    assert_eq!(short_name("cell-42_a"), "cell-42_a");
    let a = short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f");
    let b = short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e80");
    assert!(a.len() <= NAME_LEN && b.len() <= NAME_LEN);
    assert_ne!(a, b);
    assert_eq!(a, short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f"));
    // Sanitising alone would make these equal; the hash keeps them apart.
    assert_ne!(short_name("a b"), short_name("a/b"));
    assert_ne!(short_name("Random"), "Random");
    assert!(short_name("").len() <= NAME_LEN);
}

#[test]
fn tester_times_convert_both_ways() {
    assert_eq!(iso8601_from_ms(0), "1970-01-01T00:00:00");
    assert_eq!(
        ms_from_iso8601("2022-10-13T12:32:56"),
        Some(1_665_664_376_000)
    );
    assert_eq!(
        ms_from_iso8601("2024-02-29T23:59:59.5Z"),
        Some(1_709_251_199_500)
    );
    assert_eq!(iso8601_from_ms(1_709_251_199_500), "2024-02-29T23:59:59");
    assert_eq!(ms_from_iso8601("yesterday"), None);
    assert_eq!(ms_from_iso8601("2022-13-01T00:00:00"), None);
}

#[test]
fn a_tester_time_with_a_year_beyond_four_digits_is_no_time_not_a_panic() {
    assert_eq!(ms_from_iso8601("99999999999999999-01-01T00:00:00"), None);
    assert_eq!(ms_from_iso8601("10000-01-01T00:00:00"), None);
    assert_eq!(
        ms_from_iso8601("9999-12-31T23:59:59"),
        Some(253_402_300_799_000)
    );
}

#[test]
fn the_public_aux_values_example_decodes() {
    let line = r#"{"jsonrpc":"2.0","result":{"FClass":4,"FNum":4,"Chan":93,"Len":1,"AuxValues":[24.7545490264893]},"id":1987}"#;
    match parse_json_reply(line).unwrap() {
        JsonReply::Result {
            id,
            function,
            chan,
            fields,
        } => {
            assert_eq!((id, function, chan), (Some(1987), AUX_VALUES, Some(93)));
            let aux = AuxValues::from_json(&fields).unwrap();
            assert_eq!(aux.values, vec![24.7545490264893]);
        }
        other => panic!("{other:?}"),
    }
    let request = json_request(1987, AUX_VALUES, Some(1), Map::new());
    let v: Value = serde_json::from_str(request.trim_end()).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","method":"MacNet","params":{"FClass":4,"FNum":4,"Chan":1},"id":1987})
    );
}

#[test]
fn aux_values_round_trip_in_both_encodings() {
    for values in [vec![], vec![24.75], vec![24.75, -5.5, 1000.125]] {
        let aux = AuxValues { values };
        let frame = aux.to_frame(7);
        assert_eq!((frame.function, frame.chan), (AUX_VALUES, 7));
        assert_eq!(usize::from(frame.len), 4 * aux.values.len());
        let (split, used) = split_frame(&frame.encode(), Direction::Reply).unwrap();
        assert_eq!(used, HEADER_LEN + frame.data.len());
        assert_eq!(AuxValues::from_frame(&split).unwrap(), aux);
        let m = aux.to_json(7);
        assert_eq!(m["Chan"], json!(7));
        assert_eq!(m["Len"], json!(aux.values.len()));
        assert_eq!(AuxValues::from_json(&m).unwrap(), aux);
    }
    let request = AuxValues::request(3).encode();
    assert_eq!(request, [4, 0, 4, 0, 3, 0, 1, 0]);
}

#[test]
fn malformed_aux_values_are_errors_or_no_values_never_panics() {
    let decode = |v: Value| AuxValues::from_json(v.as_object().unwrap());
    let none = AuxValues { values: vec![] };
    // Tolerated: no list, null, empty, and a Len that disagrees with the list.
    assert_eq!(decode(json!({"Chan": 1, "Len": 0})).unwrap(), none);
    assert_eq!(decode(json!({"Chan": 1, "AuxValues": null})).unwrap(), none);
    assert_eq!(decode(json!({"Len": 2, "AuxValues": []})).unwrap(), none);
    let three = decode(json!({"Len": 1, "AuxValues": [1.5, 2, 3e1]})).unwrap();
    assert_eq!(three.values, vec![1.5, 2.0, 30.0]);
    // Errors, naming the field.
    for bad in [
        json!({"AuxValues": 24.7}),
        json!({"AuxValues": "24.7"}),
        json!({"AuxValues": [24.7, "hot"]}),
        json!({"AuxValues": [null]}),
        json!({"AuxValues": {"0": 24.7}}),
    ] {
        let e = decode(bad.clone()).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::Field {
                    field: "AuxValues",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
    // Binary: a partial value, and a reply to another function.
    let partial = Frame::with_data(AUX_VALUES, 0, vec![0, 0, 128]);
    assert!(matches!(
        AuxValues::from_frame(&partial),
        Err(WireError::Length {
            got: 3,
            need: 4,
            ..
        })
    ));
    let other = Frame::with_data(READING, 0, vec![0; 4]);
    assert!(matches!(
        AuxValues::from_frame(&other),
        Err(WireError::Function { .. })
    ));
}
