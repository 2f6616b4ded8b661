//! Properties: no parser panics on arbitrary, mutated or truncated input.

use super::*;
use crate::cycler::{ChannelAddr, Record};
use proptest::prelude::*;

/// Valid frames of every kind, for mutation.
fn samples() -> Vec<String> {
    let c = ChannelRef {
        ip: "10.0.0.2".into(),
        devtype: 27,
        addr: ChannelAddr {
            unit: 1,
            sub_unit: 1,
            channel: 2,
        },
    };
    let r = Record {
        index: 1,
        test_time_s: 1.0,
        voltage_v: 3.7,
        current_a: 1.0,
        temperature_c: Some(25.0),
        step: 1,
        cycle: 1,
        capacity_ah: 0.1,
        energy_wh: 0.4,
    };
    vec![
        connect_request("admin", "neware"),
        getchlstatus_request(std::slice::from_ref(&c)),
        start_request(
            &[StartItem {
                channel: c.clone(),
                barcode: "b".into(),
                path: r"D:\x.xml".into(),
            }],
            r"D:\b",
        ),
        download_request(&DownloadRequest {
            channel: c.clone(),
            auxid: 0,
            testid: 1,
            startpos: 1,
            count: 10,
        }),
        connect_reply(true),
        getdevinfo_reply(&[DevChannel {
            channel: c.clone(),
            available: true,
        }]),
        getchlstatus_reply(&[ChlStatusItem {
            channel: c.clone(),
            status: "working".into(),
            reserve_pause: false,
        }]),
        result_reply(
            cmd::STOP,
            &[ResultItem {
                channel: c.clone(),
                ok: true,
            }],
        ),
        inquiredf_reply(&[DfItem {
            channel: c.clone(),
            testid: 1,
            count: 1,
            complete: true,
        }]),
        download_reply(
            &DownloadHeader {
                channel: c,
                testid: 1,
                startpos: 1,
                count: 1,
                auxid: 0,
            },
            std::iter::once(DataRow {
                record: &r,
                step_type: step_type::CC,
                unix_time_s: 0.0,
            }),
        ),
    ]
}

/// Runs every parser on `text`; none may panic.
fn parse_all(text: &str) {
    let _ = parse_request(text);
    let _ = parse_connect_reply(text);
    let _ = parse_getdevinfo_reply(text);
    let _ = parse_getchlstatus_reply(text);
    let _ = parse_inquire_reply(text);
    let _ = parse_result_reply(text, cmd::START);
    let _ = parse_result_reply(text, cmd::STOP);
    let _ = parse_inquiredf_reply(text);
    let mut out = Vec::new();
    if parse_download_reply(text, &mut out).is_err() {
        assert!(out.is_empty());
    }
    let _ = frame_end(text.as_bytes(), 0);
}

proptest! {
    #[test]
    fn arbitrary_strings_are_errors_not_panics(s in "\\PC{0,300}") {
        parse_all(&s);
    }

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), from in 0usize..500) {
        let _ = frame_end(&bytes, from);
        parse_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_valid_frames_are_errors_not_panics(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6),
    ) {
        let mut s: Vec<char> = samples()[which].chars().collect();
        for (at, c, op) in edits {
            if s.is_empty() { break; }
            let i = at.index(s.len());
            match op {
                0 => s[i] = c,
                1 => { s.remove(i); }
                _ => s.insert(i, c),
            }
        }
        parse_all(&s.into_iter().collect::<String>());
    }

    #[test]
    fn truncated_valid_frames_are_errors_not_panics(which in 0usize..10, cut in any::<prop::sample::Index>()) {
        let s = &samples()[which];
        let mut end = cut.index(s.len() + 1);
        while !s.is_char_boundary(end) { end -= 1; }
        parse_all(&s[..end]);
    }
}
