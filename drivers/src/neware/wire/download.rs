//! The `download` reply: a page of logged records, written row by row and parsed straight from
//! the XML (each `<data>` is streamed, never stored in the tree).

use std::fmt::Write as _;

use quick_xml::events::BytesStart;

use super::message::{Fields, REPLY_NL, attr, begin, channel, channel_attrs, finish, num, reply};
use super::tables::{RESP_SUFFIX, cmd, units};
use super::{ChannelRef, WireError, malformed};
use crate::civil::civil_from_days;
use crate::cycler::Record;

/// The header of a `download` reply: which log the records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadHeader {
    /// The channel and test the records belong to, checked by the client against its
    /// request.
    pub channel: ChannelRef,
    pub testid: u64,
    /// The request's first seqid and the number of records in this reply.
    pub startpos: u64,
    pub count: u64,
    /// The auxiliary channel the records' aux values come from (0: none).
    pub auxid: u32,
}

/// One logged record as the simulator writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataRow<'a> {
    /// The record in SI units (converted with [`units`] on the way out).
    pub record: &'a Record,
    /// A [`step_type`](super::step_type) name.
    pub step_type: &'a str,
    /// Wall time of the record, Unix seconds (written as `atime`).
    pub unix_time_s: f64,
}

pub fn download_reply<'a>(
    header: &DownloadHeader,
    rows: impl ExactSizeIterator<Item = DataRow<'a>>,
) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::DOWNLOAD));
    s.reserve(rows.len() * 240);
    s.push_str("<download");
    channel_attrs(&mut s, &header.channel, "chlid", false);
    num(&mut s, "testid", header.testid);
    num(&mut s, "startpos", header.startpos);
    num(&mut s, "count", header.count);
    num(&mut s, "auxid", header.auxid);
    let _ = write!(s, "/>{REPLY_NL}<list count=\"{}\">{REPLY_NL}", rows.len());
    for row in rows {
        let r = row.record;
        let _ = write!(
            s,
            "<data seqid=\"{}\" stepid=\"{}\" cycleid=\"{}\"",
            r.index, r.step, r.cycle
        );
        attr(&mut s, "steptype", row.step_type);
        let _ = write!(
            s,
            " testtime=\"{}\" atime=\"",
            (r.test_time_s / units::S_PER_TESTTIME).round() as i64
        );
        push_atime(&mut s, row.unix_time_s);
        let _ = write!(
            s,
            "\" volt=\"{:.6}\" curr=\"{:.6}\" cap=\"{:.9}\" eng=\"{:.9}\"",
            r.voltage_v / units::V_PER_VOLT,
            r.current_a / units::A_PER_CURR,
            r.capacity_ah / units::AH_PER_CAP,
            r.energy_wh / units::WH_PER_ENG
        );
        if let Some(t) = r.temperature_c {
            let _ = write!(s, " T1=\"{t:.1}\"");
        }
        let _ = write!(s, "/>{REPLY_NL}");
    }
    let _ = write!(s, "</list>{REPLY_NL}");
    finish(s)
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of a Unix time, as `atime` is written.
fn push_atime(s: &mut String, unix_s: f64) {
    let secs = if unix_s.is_finite() {
        unix_s.max(0.0) as i64
    } else {
        0
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        s,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// Parses a `download` reply, appending its records to `out` in SI units (nothing is appended
/// when the reply is refused or malformed). Records are parsed straight from the XML, one
/// allocation-free pass per record.
pub fn parse_download_reply(
    frame: &str,
    out: &mut Vec<Record>,
) -> Result<DownloadHeader, WireError> {
    let before = out.len();
    let mut sink = |s: &BytesStart<'_>| -> Result<(), String> {
        out.push(data_record(s)?);
        Ok(())
    };
    let parsed = reply(frame, cmd::DOWNLOAD, Some(&mut sink)).and_then(|m| {
        let e = m
            .find("download")
            .ok_or_else(|| malformed("download_resp: expected a <download> header"))?;
        Ok(DownloadHeader {
            channel: channel(e, "chlid")?,
            testid: e.number("testid")?,
            startpos: e.number_or("startpos", 0)?,
            count: e.number_or("count", 0)?,
            auxid: e.number_or("auxid", 0)?,
        })
    });
    if parsed.is_err() {
        out.truncate(before);
    }
    parsed
}

/// One `<data>` element as a record.
fn data_record(s: &BytesStart<'_>) -> Result<Record, String> {
    let mut seqid = None;
    let mut testtime = None;
    let mut volt = None;
    let mut curr = None;
    let mut r = Record {
        index: 0,
        test_time_s: 0.0,
        voltage_v: 0.0,
        current_a: 0.0,
        temperature_c: None,
        step: 0,
        cycle: 0,
        capacity_ah: 0.0,
        energy_wh: 0.0,
    };
    for a in s.attributes() {
        let a = a.map_err(|e| format!("bad attribute in <data>: {e}"))?;
        let key = a.key.as_ref();
        let value = a
            .unescape_value()
            .map_err(|e| format!("bad attribute value in <data>: {e}"))?;
        let v = value.trim();
        let bad = || {
            format!(
                "<data> {}={v:?}: expected a number",
                String::from_utf8_lossy(key)
            )
        };
        let float = || {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(bad)
        };
        match key {
            b"seqid" => seqid = Some(v.parse::<u64>().map_err(|_| bad())?),
            b"stepid" => r.step = v.parse().map_err(|_| bad())?,
            b"cycleid" => r.cycle = v.parse().map_err(|_| bad())?,
            b"testtime" => testtime = Some(float()?),
            b"volt" => volt = Some(float()?),
            b"curr" => curr = Some(float()?),
            b"cap" => r.capacity_ah = float()? * units::AH_PER_CAP,
            b"eng" => r.energy_wh = float()? * units::WH_PER_ENG,
            b"T1" => r.temperature_c = Some(float()?),
            _ => {}
        }
    }
    let missing = |name: &str| format!("<data> has no {name} attribute");
    r.index = seqid.ok_or_else(|| missing("seqid"))?;
    r.test_time_s = testtime.ok_or_else(|| missing("testtime"))? * units::S_PER_TESTTIME;
    r.voltage_v = volt.ok_or_else(|| missing("volt"))? * units::V_PER_VOLT;
    r.current_a = curr.ok_or_else(|| missing("curr"))? * units::A_PER_CURR;
    Ok(r)
}
