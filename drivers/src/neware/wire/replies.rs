//! Replies (written by the simulator, parsed tolerantly by the client), but for the `download`
//! page: login, device info, status, live values, start/stop results and log sizes.

use std::fmt::Write as _;

use cyclerd_protocols::xml::Element;
use quick_xml::escape::escape;

use super::message::{
    Fields, REPLY_NL, attr, bad_number, begin, channel, channel_attrs, finish, list, num, number,
    reply,
};
use super::tables::{FALSE, OK, RESP_SUFFIX, cmd, step_type};
use super::{ChannelRef, WireError, malformed};
use crate::cycler::ChannelAddr;

/// One channel of `getdevinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevChannel {
    /// The channel with the `ip` and `devtype` requests must repeat for it.
    pub channel: ChannelRef,
    /// The element's text (`true`/`false`): whether the server offers the channel.
    pub available: bool,
}

/// One channel of `getchlstatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChlStatusItem {
    /// As reported: real servers have been seen to report a wrong `subdevid` here.
    pub channel: ChannelRef,
    /// The status text, kept raw (see [`WorkStatus::from_name`](super::WorkStatus::from_name)) so one unknown word does
    /// not spoil the other channels of the reply.
    pub status: String,
    /// `reservepause`: a pause is scheduled.
    pub reserve_pause: bool,
}

/// One channel of `inquire`.
#[derive(Debug, Clone, PartialEq)]
pub struct InquireItem {
    /// From `dev="devtype-devid-subdevid-chlid-aux"`.
    pub channel: ChannelRef,
    /// The auxiliary channel the values of `T1` come from (0: none).
    pub aux: u32,
    /// Cycle and step (the step file's step number) running now.
    pub cycle: u32,
    pub step: u32,
    /// A [`step_type`] name.
    pub step_type: String,
    /// A [`WorkStatus`](super::WorkStatus) name, raw.
    pub workstatus: String,
    /// The barcode the test was started under: the name that ties it to its owner.
    pub barcode: String,
    /// Live values, in the [`units`](super::units) of records.
    pub current: f64,
    pub voltage: f64,
    pub capacity: f64,
    pub energy: f64,
    /// Test time and step time, in the units the server reports them (not used by the driver).
    pub total_time: f64,
    pub relative_time: f64,
    /// `open_or_close`: whether the channel's output is on.
    pub open: bool,
    /// The server's code for the last event on the channel (why a protection tripped).
    pub log_code: u32,
    /// `T1`, the first auxiliary temperature, when the server reports one.
    pub temperature: Option<f64>,
}

/// One channel of a `start` or `stop` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultItem {
    /// The channel the result is for.
    pub channel: ChannelRef,
    /// `ok` (true) or `false`.
    pub ok: bool,
}

/// One channel of `inquiredf`: its latest test and how many records the server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DfItem {
    /// The channel the test ran on.
    pub channel: ChannelRef,
    /// 0 when the channel never ran a test.
    pub testid: u64,
    /// Records logged so far; their seqids run from 1 to `count`.
    pub count: u64,
    /// The element's text: whether the server has all of the test's data.
    pub complete: bool,
}

pub fn connect_reply(ok: bool) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::CONNECT));
    let _ = write!(
        s,
        "<result>{}</result>{REPLY_NL}",
        if ok { OK } else { FALSE }
    );
    finish(s)
}

/// The reply to a request the server refuses as a whole (not logged in, unknown command, an
/// injected error): `<result>false</result>`.
pub fn refusal_reply(command: &str) -> String {
    let mut s = begin(REPLY_NL, &format!("{command}{RESP_SUFFIX}"));
    let _ = write!(s, "<result>{FALSE}</result>{REPLY_NL}");
    finish(s)
}

pub fn getdevinfo_reply(channels: &[DevChannel]) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::GETDEVINFO));
    let _ = write!(s, "<middle count=\"{}\">{REPLY_NL}", channels.len());
    for c in channels {
        s.push_str("<channel");
        channel_attrs(&mut s, &c.channel, "Channelid", true);
        let _ = write!(s, ">{}</channel>{REPLY_NL}", c.available);
    }
    let _ = write!(s, "</middle>{REPLY_NL}");
    finish(s)
}

pub fn getchlstatus_reply(items: &[ChlStatusItem]) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::GETCHLSTATUS));
    list(&mut s, REPLY_NL, items, |s, i| {
        s.push_str("<status");
        channel_attrs(s, &i.channel, "chlid", true);
        num(s, "reservepause", u8::from(i.reserve_pause));
        let _ = write!(s, ">{}</status>", escape(i.status.as_str()));
    });
    finish(s)
}

pub fn inquire_reply(items: &[InquireItem]) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::INQUIRE));
    list(&mut s, REPLY_NL, items, |s, i| {
        let c = &i.channel;
        let _ = write!(
            s,
            "<inquire dev=\"{}-{}-{}-{}-{}\"",
            c.devtype, c.addr.unit, c.addr.sub_unit, c.addr.channel, i.aux
        );
        num(s, "cycle_id", i.cycle);
        num(s, "step_id", i.step);
        attr(s, "step_type", &i.step_type);
        attr(s, "workstatus", &i.workstatus);
        attr(s, "barcode", &i.barcode);
        num(s, "current", i.current);
        num(s, "voltage", i.voltage);
        num(s, "capacity", i.capacity);
        num(s, "energy", i.energy);
        num(s, "totaltime", i.total_time);
        num(s, "relativetime", i.relative_time);
        num(s, "open_or_close", u8::from(i.open));
        num(s, "log_code", i.log_code);
        if let Some(t) = i.temperature {
            num(s, "T1", format_args!("{t:.1}"));
        }
        s.push_str("/>");
    });
    finish(s)
}

/// The reply to `start` or `stop` (`command`): per channel `ok` or `false`.
pub fn result_reply(command: &str, items: &[ResultItem]) -> String {
    let mut s = begin(REPLY_NL, &format!("{command}{RESP_SUFFIX}"));
    list(&mut s, REPLY_NL, items, |s, i| {
        let _ = write!(s, "<{}", escape(command));
        channel_attrs(s, &i.channel, "chlid", true);
        let _ = write!(
            s,
            ">{}</{}>",
            if i.ok { OK } else { FALSE },
            escape(command)
        );
    });
    finish(s)
}

pub fn inquiredf_reply(items: &[DfItem]) -> String {
    let mut s = begin(REPLY_NL, &format!("{}{RESP_SUFFIX}", cmd::INQUIREDF));
    list(&mut s, REPLY_NL, items, |s, i| {
        s.push_str("<chl");
        channel_attrs(s, &i.channel, "chlid", false);
        num(s, "testid", i.testid);
        num(s, "count", i.count);
        let _ = write!(s, ">{}</chl>", i.complete);
    });
    finish(s)
}

/// Checks a `connect` reply: `<result>ok</result>`.
pub fn parse_connect_reply(frame: &str) -> Result<(), WireError> {
    let m = reply(frame, cmd::CONNECT, None)?;
    match m.find("result") {
        Some(_) => Ok(()),
        None => Err(malformed("connect_resp: expected <result>")),
    }
}

pub fn parse_getdevinfo_reply(frame: &str) -> Result<Vec<DevChannel>, WireError> {
    let m = reply(frame, cmd::GETDEVINFO, None)?;
    let middle = m
        .find("middle")
        .ok_or_else(|| malformed("getdevinfo_resp: expected <middle>"))?;
    middle
        .children
        .iter()
        .filter(|e| e.name == "channel")
        .map(|e| {
            // `Channelid` as the facts spell it; `chlid` accepted from other server versions.
            let chlid = if e.get_attr("Channelid").is_some() {
                "Channelid"
            } else {
                "chlid"
            };
            Ok(DevChannel {
                channel: channel(e, chlid)?,
                available: truth(e)?,
            })
        })
        .collect()
}

/// The `true`/`false` text of an element.
fn truth(e: &Element) -> Result<bool, WireError> {
    match e.text_or_empty().trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(malformed(format!(
            "<{}>: expected true or false, found {other:?}",
            e.name
        ))),
    }
}

pub fn parse_getchlstatus_reply(frame: &str) -> Result<Vec<ChlStatusItem>, WireError> {
    let m = reply(frame, cmd::GETCHLSTATUS, None)?;
    m.list("status")?
        .map(|e| {
            Ok(ChlStatusItem {
                channel: channel(e, "chlid")?,
                status: e.text_or_empty().trim().to_owned(),
                reserve_pause: e.number_or::<u32>("reservepause", 0)? != 0,
            })
        })
        .collect()
}

pub fn parse_inquire_reply(frame: &str) -> Result<Vec<InquireItem>, WireError> {
    let m = reply(frame, cmd::INQUIRE, None)?;
    m.list("inquire")?.map(inquire_item).collect()
}

fn inquire_item(e: &Element) -> Result<InquireItem, WireError> {
    let dev = e.required("dev")?;
    let parts: Vec<u32> = dev
        .split('-')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad_dev(dev))?;
    let (devtype, unit, sub_unit, chl, aux) = match parts[..] {
        [t, d, s, c, a] => (t, d, s, c, a),
        [t, d, s, c] => (t, d, s, c, 0),
        _ => return Err(bad_dev(dev)),
    };
    let optional = |name: &str| -> Result<Option<f64>, WireError> {
        e.get_attr(name)
            .map(|v| number(v).ok_or_else(|| bad_number("inquire", name, v)))
            .transpose()
    };
    Ok(InquireItem {
        channel: ChannelRef {
            ip: e.get_attr("ip").unwrap_or("").to_owned(),
            devtype,
            addr: ChannelAddr {
                unit,
                sub_unit,
                channel: chl,
            },
        },
        aux,
        cycle: e.number_or("cycle_id", 0)?,
        step: e.number_or("step_id", 0)?,
        step_type: e
            .get_attr("step_type")
            .unwrap_or(step_type::NONE)
            .to_owned(),
        workstatus: e.get_attr("workstatus").unwrap_or("").trim().to_owned(),
        barcode: e.get_attr("barcode").unwrap_or("").trim().to_owned(),
        current: e.number_or("current", 0.0)?,
        voltage: e.number_or("voltage", 0.0)?,
        capacity: e.number_or("capacity", 0.0)?,
        energy: e.number_or("energy", 0.0)?,
        total_time: e.number_or("totaltime", 0.0)?,
        relative_time: e.number_or("relativetime", 0.0)?,
        open: e.number_or::<u32>("open_or_close", 0)? != 0,
        log_code: e.number_or("log_code", 0)?,
        temperature: optional("T1")?,
    })
}

fn bad_dev(dev: &str) -> WireError {
    malformed(format!(
        "<inquire> dev={dev:?}: expected devtype-devid-subdevid-chlid-aux"
    ))
}

/// Parses the reply to `start` or `stop` (`command`).
pub fn parse_result_reply(
    frame: &str,
    command: &'static str,
) -> Result<Vec<ResultItem>, WireError> {
    let m = reply(frame, command, None)?;
    m.list(command)?
        .map(|e| {
            let ok = match e.text_or_empty().trim() {
                OK => true,
                FALSE => false,
                other => {
                    return Err(malformed(format!(
                        "<{command}>: expected {OK} or {FALSE}, found {other:?}"
                    )));
                }
            };
            Ok(ResultItem {
                channel: channel(e, "chlid")?,
                ok,
            })
        })
        .collect()
}

pub fn parse_inquiredf_reply(frame: &str) -> Result<Vec<DfItem>, WireError> {
    let m = reply(frame, cmd::INQUIREDF, None)?;
    m.list("chl")?
        .map(|e| {
            Ok(DfItem {
                channel: channel(e, "chlid")?,
                testid: e.number("testid")?,
                count: e.number("count")?,
                complete: e.text_or_empty().trim() == "true",
            })
        })
        .collect()
}
