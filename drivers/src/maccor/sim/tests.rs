//! Tests of the simulated tester's answers, straight on its state.

use super::*;
use crate::Clock;
use crate::cell::{Cell, Chemistry};
use crate::maccor::wire::{self, AuxValues, Frame, Function, Mode, Output};
use crate::transport::faults::Faults;
use serde_json::Map;
use std::collections::{HashMap, HashSet};

fn config() -> SimConfig {
    SimConfig::new(
        2,
        CellParams {
            initial_soc: 0.5,
            ..CellParams::new(Chemistry::Nmc, 2.5)
        },
    )
}

#[test]
fn direct_outputs_limit_each_other() {
    let cfg = config();
    let cell = Cell::new(cfg.cells[0].clone());
    let charge = Output {
        current_a: 2.0,
        voltage_v: wire::IGNORE,
        power_w: wire::IGNORE,
        resistance_ohm: 0.0,
        range: 4,
        mode: Mode::Charge,
    };
    assert_eq!(direct_current(&cell, &charge, &cfg), 2.0);
    let capped = Output {
        voltage_v: cell.terminal_voltage(1.0) as f32,
        ..charge
    };
    assert!((direct_current(&cell, &capped, &cfg) - 1.0).abs() < 1e-3);
    let discharge = Output {
        mode: Mode::Discharge,
        power_w: 3.0,
        ..charge
    };
    let i = direct_current(&cell, &discharge, &cfg);
    assert!(i < 0.0 && i > -1.0, "{i}");
    assert_eq!(direct_current(&cell, &Output::rest(4), &cfg), 0.0);
}

fn tester() -> Tester {
    Tester {
        channels: config()
            .cells
            .iter()
            .map(|c| Channel::new(c.clone(), 0.0))
            .collect(),
        config: config(),
        clock: Clock::manual(),
        procedures: HashMap::new(),
        names: HashSet::new(),
        random_names: 0,
        faults: Faults::none(),
        misroute: None,
    }
}

#[test]
fn json_errors_use_macnet_texts() {
    let mut t = tester();
    let ask = |t: &mut Tester, line: &str| match wire::parse_json_reply(&json_reply(t, line)) {
        Ok(wire::JsonReply::Error { message, .. }) => message,
        other => format!("{other:?}"),
    };
    assert_eq!(ask(&mut t, "{not json"), "Parse error");
    let req = |c: u16, n: u16, extra: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"MacNet","params":{{"FClass":{c},"FNum":{n}{extra}}},"id":1}}"#
        )
    };
    assert_eq!(ask(&mut t, &req(9, 1, "")), "Invalid FClass");
    assert_eq!(ask(&mut t, &req(4, 99, "")), "Invalid FNum");
    assert_eq!(ask(&mut t, &req(1, 6, "")), "Invalid FNum");
    assert_eq!(ask(&mut t, &req(4, 7, "")), "Invalid params");
    assert_eq!(ask(&mut t, &req(4, 7, r#","Chan":7"#)), "Illegal value");
    let rest = r#","Chan":0,"Current":0,"Voltage":4.2,"Power":10,"ChMode":"R""#;
    assert_eq!(ask(&mut t, &req(6, 8, rest)), "Illegal value");
    t.faults.fail_next(1, ());
    assert_eq!(ask(&mut t, &req(1, 2, "")), "MacNet error");
}

#[test]
fn fclass_0_echoes_in_both_encodings() {
    let mut t = tester();
    let mut session = Session::default();
    let echo = Frame::request(wire::ECHO, 1, 0);
    let reply = binary_reply(&mut t, &mut session, &echo).unwrap();
    assert_eq!(reply.encode(), echo.encode());
    let line = wire::json_request(3, wire::ECHO, Some(1), Map::new());
    match wire::parse_json_reply(&json_reply(&mut t, &line)).unwrap() {
        wire::JsonReply::Result {
            id, function, chan, ..
        } => {
            assert_eq!((id, function, chan), (Some(3), wire::ECHO, Some(1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn aux_values_answer_the_cell_temperature_first_and_nothing_without_inputs() {
    let mut t = tester();
    t.config.aux_inputs = vec![2];
    let cell_c = t.channels[0].cell.temperature_c();
    let mut session = Session::default();
    let ask = |t: &mut Tester, chan: u16| {
        let line = wire::json_request(5, wire::AUX_VALUES, Some(chan), Map::new());
        match wire::parse_json_reply(&json_reply(t, &line)).unwrap() {
            wire::JsonReply::Result {
                chan: got, fields, ..
            } => {
                assert_eq!(got, Some(chan));
                (
                    fields["Len"].clone(),
                    AuxValues::from_json(&fields).unwrap().values,
                )
            }
            other => panic!("{other:?}"),
        }
    };
    let ambient = t.config.cells[0].ambient_c;
    assert_eq!(ask(&mut t, 0), (2.into(), vec![cell_c, ambient]));
    // Channel 1 has no aux inputs configured: Len 0, an empty list.
    assert_eq!(ask(&mut t, 1), (0.into(), vec![]));
    let reply = binary_reply(&mut t, &mut session, &AuxValues::request(1)).unwrap();
    assert_eq!(
        (reply.function, reply.chan, reply.len),
        (wire::AUX_VALUES, 1, 0)
    );
    let reply = binary_reply(&mut t, &mut session, &AuxValues::request(0)).unwrap();
    assert_eq!(reply.len, 8);
    assert_eq!(
        AuxValues::from_frame(&reply).unwrap().values[0],
        cell_c as f32 as f64
    );
    // A channel the tester does not have.
    let line = wire::json_request(6, wire::AUX_VALUES, Some(7), Map::new());
    assert!(matches!(
        wire::parse_json_reply(&json_reply(&mut t, &line)),
        Ok(wire::JsonReply::Error { .. })
    ));
}

proptest::proptest! {
    /// Whatever arrives on either port, the handlers answer without panicking.
    #[test]
    fn arbitrary_requests_never_panic_the_handlers(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        function in 0u16..10,
        num in 0u16..12,
    ) {
        let mut t = tester();
        let mut session = Session::default();
        let mut rest: &[u8] = &bytes;
        while let Some((frame, used)) = wire::split_frame(rest, wire::Direction::Request) {
            let _ = binary_reply(&mut t, &mut session, &frame);
            rest = &rest[used..];
        }
        let f = Function { class: function, num };
        for chan in [0, 1, 7] {
            let _ = binary_reply(&mut t, &mut session, &Frame::with_data(f, chan, bytes.clone()));
            let _ = binary_reply(&mut t, &mut session, &Frame::with_data(wire::FILE_TRANSFER, chan, bytes.clone()));
        }
        let _ = json_reply(&mut t, &String::from_utf8_lossy(&bytes));
    }
}
