//! Property tests of the MacNet codecs: arbitrary bytes and lines never make a decoder panic.

use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Runs every binary decoder on a frame built from arbitrary bytes.
fn decode_all_binary(frame: &Frame) {
    let _ = decode_result(frame);
    let _ = StatusBlock::from_frame(frame);
    let _ = Reading::from_frame(frame);
    let _ = AuxValues::from_frame(frame);
    let _ = StartTest::from_frame(frame);
    let _ = Output::from_frame(frame);
    let _ = DirectStart::from_frame(frame);
    let _ = Packet::from_frame(frame);
    let _ = Version::from_bytes(&frame.data);
    let _ = SystemInfo::from_bytes(&frame.data);
    let _ = Reading::from_bytes(&frame.data);
    let _ = Output::from_bytes(&frame.data);
    let _ = Packet::from_bytes(&frame.data);
}

/// Runs every JSON decoder on a result map.
fn decode_all_json(m: &Map<String, Value>) {
    let _ = Version::from_json(m);
    let _ = SystemInfo::from_json(m);
    let _ = StatusBlock::from_json(m);
    let _ = Reading::from_json(m);
    let _ = AuxValues::from_json(m);
    let _ = StartTest::from_json(m);
    let _ = Output::from_json(m);
    let _ = DirectStart::from_json(m);
    let _ = json_result_code(m);
}

const KEYS: &[&str] = &[
    "FClass",
    "FNum",
    "Chan",
    "Len",
    "Status",
    "RF1",
    "RF2",
    "Stat",
    "LastRecNum",
    "LastRec",
    "Cycle",
    "Step",
    "TestTime",
    "StepTime",
    "Capacity",
    "Energy",
    "Current",
    "Voltage",
    "TesterTime",
    "Result",
    "TestName",
    "ProcName",
    "Comment",
    "Crate",
    "ChamberNum",
    "ChMode",
    "Power",
    "Resistance",
    "CurrentRange",
    "DataTime",
    "TestChannels",
    "APIVersion",
    "SystemID",
    "AuxValues",
];

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        "\\PC{0,30}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(proptest::sample::select(KEYS), inner, 0..4).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_binary_input_gives_errors_not_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        for dir in [Direction::Request, Direction::Reply] {
            if let Some((frame, used)) = split_frame(&bytes, dir) {
                prop_assert!(used <= bytes.len());
                decode_all_binary(&frame);
            }
        }
        for function in [STATUS, READING, AUX_VALUES, START, DIRECT_OUTPUT, DIRECT_START, FILE_TRANSFER, SELECT] {
            decode_all_binary(&Frame::with_data(function, 0, bytes.clone()));
        }
    }

    #[test]
    fn aux_values_round_trip_whatever_len_says(
        values in proptest::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 0..40),
        len in proptest::option::of(any::<u16>()),
        chan in any::<u16>(),
    ) {
        let aux = AuxValues { values: values.iter().map(|&v| f64::from(v)).collect() };
        let frame = aux.to_frame(chan);
        let (split, used) = split_frame(&frame.encode(), Direction::Reply).unwrap();
        prop_assert_eq!(used, HEADER_LEN + 4 * values.len());
        prop_assert_eq!(AuxValues::from_frame(&split).unwrap(), aux.clone());
        // JSON: the list is what was measured, whatever Len claims (or when it is absent).
        let mut m = aux.to_json(chan);
        match len {
            Some(n) => { m.insert("Len".into(), n.into()); }
            None => { m.remove("Len"); }
        }
        let line = json_result(&json!(1), AUX_VALUES, None, m);
        let Ok(JsonReply::Result { fields, chan: got, .. }) = parse_json_reply(&line) else {
            return Err(TestCaseError::fail("the reply did not parse"));
        };
        prop_assert_eq!(got, Some(chan));
        let back = AuxValues::from_json(&fields).unwrap();
        prop_assert_eq!(back.values.len(), values.len());
        for (b, v) in back.values.iter().zip(&values) {
            // Through JSON text: the value, to within its last bit.
            prop_assert!((b - f64::from(*v)).abs() <= f64::from(v.abs()) * 1e-15, "{} vs {}", b, v);
        }
    }

    #[test]
    fn arbitrary_json_lines_give_errors_not_panics(line in "\\PC{0,200}") {
        let _ = parse_json_request(&line);
        if let Ok(JsonReply::Result { fields, .. }) = parse_json_reply(&line) {
            decode_all_json(&fields);
        }
        let _ = ms_from_iso8601(&line);
        prop_assert!(short_name(&line).len() <= NAME_LEN);
    }

    #[test]
    fn arbitrary_json_objects_give_errors_not_panics(
        fields in proptest::collection::btree_map(proptest::sample::select(KEYS), any_value(), 0..20),
    ) {
        let m: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        decode_all_json(&m);
        let line = json!({"jsonrpc": "2.0", "result": m.clone(), "id": 1}).to_string();
        if let Ok(JsonReply::Result { fields, .. }) = parse_json_reply(&line) {
            decode_all_json(&fields);
        }
        let request = json!({"jsonrpc": "2.0", "method": "MacNet", "params": m, "id": 1}).to_string();
        let _ = parse_json_request(&request);
    }
}
