//! Round trips of every request and reply through its builder and parser, and replies as
//! real servers write them.

use super::*;
use crate::cycler::{ChannelAddr, Record};

fn chan(devid: u32, subdevid: u32, chlid: u32) -> ChannelRef {
    ChannelRef {
        ip: "127.0.0.1".into(),
        devtype: 27,
        addr: ChannelAddr {
            unit: devid,
            sub_unit: subdevid,
            channel: chlid,
        },
    }
}

fn record(index: u64) -> Record {
    Record {
        index,
        test_time_s: index as f64 * 10.0,
        voltage_v: 3.712345,
        current_a: -1.25,
        temperature_c: Some(25.5),
        step: 3,
        cycle: 2,
        capacity_ah: 0.125,
        energy_wh: 0.46,
    }
}

#[test]
fn a_request_is_framed_exactly_as_documented() {
    let r = getdevinfo_request();
    assert_eq!(
        r,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<bts version=\"1.0\">\n<cmd>getdevinfo</cmd>\n</bts>\n\n#\r\n"
    );
}

#[test]
fn replies_use_crlf_line_breaks_and_name_the_command_resp() {
    let r = connect_reply(true);
    assert!(r.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<bts version=\"1.0\">\r\n<cmd>connect_resp</cmd>\r\n"));
    assert!(r.ends_with("</bts>\n\n#\r\n"));
    parse_connect_reply(&r).unwrap();
    assert!(matches!(
        parse_connect_reply(&connect_reply(false)),
        Err(WireError::Refused(_))
    ));
}

#[test]
fn every_request_parses_back_to_what_was_built() {
    let a = chan(1, 2, 3);
    let b = chan(1, 1, 8);
    assert_eq!(
        parse_request(&connect_request("admin", "p&<w>\"d")).unwrap(),
        Request::Connect {
            username: "admin".into(),
            password: "p&<w>\"d".into(),
            login_type: LOGIN_TYPE.into()
        }
    );
    assert_eq!(
        parse_request(&getdevinfo_request()).unwrap(),
        Request::GetDevInfo
    );
    let both = vec![a.clone(), b.clone()];
    assert_eq!(
        parse_request(&getchlstatus_request(&both)).unwrap(),
        Request::GetChlStatus(both.clone())
    );
    assert_eq!(
        parse_request(&inquire_request(&both)).unwrap(),
        Request::Inquire(both.clone())
    );
    assert_eq!(
        parse_request(&stop_request(&both)).unwrap(),
        Request::Stop(both.clone())
    );
    let no_ip = |c: &ChannelRef| ChannelRef {
        ip: String::new(),
        ..c.clone()
    };
    assert_eq!(
        parse_request(&inquiredf_request(&both)).unwrap(),
        Request::InquireDf(vec![no_ip(&a), no_ip(&b)])
    );
    let item = StartItem {
        channel: a.clone(),
        barcode: "R&D \"cell\" <7>".into(),
        path: r"D:\steps & more\x.xml".into(),
    };
    assert_eq!(
        parse_request(&start_request(
            std::slice::from_ref(&item),
            r"D:\data & backup"
        ))
        .unwrap(),
        Request::Start {
            items: vec![item],
            backup_dir: Some(r"D:\data & backup".into())
        }
    );
    let d = DownloadRequest {
        channel: no_ip(&a),
        auxid: 0,
        testid: 2818580404,
        startpos: 1001,
        count: 1000,
    };
    assert_eq!(
        parse_request(&download_request(&d)).unwrap(),
        Request::Download(d)
    );
}

#[test]
fn requests_from_other_clients_parse_too() {
    // Spaces around `=`, tabs, the short terminator.
    let r = "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<bts version=\"1.0\">\n\t<cmd>getchlstatus</cmd>\n\t<list count = \"1\">\n\t\t<status ip=\"127.0.0.1\" devtype=\"24\" devid=\"1\" subdevid=\"2\" chlid=\"3\">true</status>\n\t</list>\n</bts>#\r\n";
    assert_eq!(
        parse_request(r).unwrap(),
        Request::GetChlStatus(vec![ChannelRef {
            devtype: 24,
            ..chan(1, 2, 3)
        }])
    );
    let light = "<?xml version=\"1.0\" ?><bts version=\"1.0\"><cmd>light</cmd></bts>";
    assert_eq!(
        parse_request(light).unwrap(),
        Request::Other("light".into())
    );
    assert!(parse_request("<bts version=\"1.0\"><cmd>getdevinfo</cmd></bts>").is_err());
}

#[test]
fn every_reply_parses_back_to_what_was_built() {
    let dev = vec![
        DevChannel {
            channel: chan(1, 1, 1),
            available: true,
        },
        DevChannel {
            channel: chan(1, 2, 1),
            available: false,
        },
    ];
    assert_eq!(
        parse_getdevinfo_reply(&getdevinfo_reply(&dev)).unwrap(),
        dev
    );
    let st = vec![ChlStatusItem {
        channel: chan(1, 1, 4),
        status: "protect".into(),
        reserve_pause: true,
    }];
    assert_eq!(
        parse_getchlstatus_reply(&getchlstatus_reply(&st)).unwrap(),
        st
    );
    let inq = vec![InquireItem {
        channel: ChannelRef {
            ip: String::new(),
            ..chan(21, 1, 2)
        },
        aux: 0,
        cycle: 3,
        step: 2,
        step_type: step_type::CV.into(),
        workstatus: "working".into(),
        barcode: "cell & co".into(),
        current: 0.5,
        voltage: 4.2,
        capacity: 1.5,
        energy: 6.0,
        total_time: 3600.0,
        relative_time: 60.5,
        open: true,
        log_code: 7,
        temperature: Some(26.5),
    }];
    assert_eq!(parse_inquire_reply(&inquire_reply(&inq)).unwrap(), inq);
    let res = vec![
        ResultItem {
            channel: chan(1, 1, 1),
            ok: true,
        },
        ResultItem {
            channel: chan(1, 1, 2),
            ok: false,
        },
    ];
    assert_eq!(
        parse_result_reply(&result_reply(cmd::START, &res), cmd::START).unwrap(),
        res
    );
    let df = vec![DfItem {
        channel: ChannelRef {
            ip: String::new(),
            ..chan(1, 1, 1)
        },
        testid: 11,
        count: 10,
        complete: true,
    }];
    assert_eq!(parse_inquiredf_reply(&inquiredf_reply(&df)).unwrap(), df);
}

#[test]
fn download_pages_convert_records_to_si_units() {
    let records: Vec<Record> = (5..8).map(record).collect();
    let header = DownloadHeader {
        channel: ChannelRef {
            ip: String::new(),
            ..chan(1, 1, 1)
        },
        testid: 9,
        startpos: 5,
        count: 3,
        auxid: 0,
    };
    let frame = download_reply(
        &header,
        records.iter().map(|r| DataRow {
            record: r,
            step_type: step_type::DC,
            unix_time_s: 1_682_093_234.0,
        }),
    );
    assert!(frame.contains("atime=\"2023-04-21 16:07:14\""), "{frame}");
    assert!(frame.contains("testtime=\"50000\""), "{frame}");
    let mut out = Vec::new();
    assert_eq!(parse_download_reply(&frame, &mut out).unwrap(), header);
    assert_eq!(out, records);
}

#[test]
fn a_download_sample_from_a_real_server_reads_in_volts_amps_and_seconds() {
    let frame = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<bts version=\"1.0\">\r\n<cmd>download_resp</cmd>\r\n<download devtype=\"25\" devid=\"41\" subdevid=\"1\" chlid=\"1\" testid=\"71\" startpos=\"1\" count=\"1000\" auxid=\"0\" />\r\n<list count=\"1\">\r\n<data seqid=\"2\" stepid=\"2\" cycleid=\"0\" steptype=\"rest\" testtime=\"1000\" atime=\"2023-04-21 16:07:15\" volt=\"1.226428\" curr=\"1.471716\" cap=\"0\" eng=\"0\" N14=\"110\" />\r\n</list>\r\n</bts>\n\n#\r\n";
    let mut out = Vec::new();
    let h = parse_download_reply(frame, &mut out).unwrap();
    assert_eq!((h.testid, h.channel.addr.unit), (71, 41));
    assert_eq!(out[0].index, 2);
    assert_eq!(out[0].test_time_s, 1.0);
    assert_eq!(out[0].voltage_v, 1.226428);
    assert_eq!(out[0].temperature_c, None);
}

#[test]
fn a_refused_or_malformed_download_appends_nothing() {
    let mut out = vec![record(1)];
    let refused = refusal_reply(cmd::DOWNLOAD);
    assert!(matches!(
        parse_download_reply(&refused, &mut out),
        Err(WireError::Refused(_))
    ));
    let bad = "<bts><cmd>download_resp</cmd><list><data seqid=\"1\" testtime=\"0\" volt=\"3\" curr=\"0\"/><data seqid=\"x\"/></list></bts>";
    assert!(parse_download_reply(bad, &mut out).is_err());
    assert_eq!(out.len(), 1);
}

#[test]
fn a_reply_to_another_command_is_malformed() {
    let r = connect_reply(true);
    let e = parse_getdevinfo_reply(&r).unwrap_err();
    assert!(e.to_string().contains("getdevinfo_resp"), "{e}");
}
