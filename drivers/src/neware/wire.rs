//! Neware BTS API facts and codec: framing, one builder and one parser per message, the status
//! and step-type tables, the units of logged records, and the step-file path mapping. No I/O:
//! the client and the simulator share it, so what one writes is exactly what the other reads.
//!
//! A message is `<?xml version="1.0" encoding="UTF-8" ?>`, `<bts version="1.0">`, `<cmd>NAME</cmd>`
//! and the body, `</bts>`, then the terminator `\n\n#\r\n` (a bare `#\r\n` is accepted too).
//! Replies name the command `NAME_resp` and use CRLF line breaks. Channels are addressed by the
//! attributes `ip devtype devid subdevid chlid` (`Channelid` in `getdevinfo`).
//!
//! Requests are parsed strictly (the simulator should refuse what a real server may refuse);
//! replies tolerantly (unknown attributes and elements are skipped). Every parser answers bad
//! input with a [`WireError`], never a panic.

use crate::cycler::{ChannelAddr, Record};
use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// TCP port of the BTS API server; the same as Modbus TCP, so it stays configurable.
pub const DEFAULT_PORT: u16 = 502;
/// The first line of every message.
pub const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>"#;
/// The root element of every message.
pub const BTS_OPEN: &str = r#"<bts version="1.0">"#;
pub const BTS_CLOSE: &str = "</bts>";
/// What follows `</bts>` in every message the driver and the simulator write.
pub const TERMINATOR: &str = "\n\n#\r\n";
/// What ends a frame after `</bts>` and optional whitespace: both terminators end in it.
const END_MARK: &[u8] = b"#\r\n";
/// Replies break lines with CRLF; requests with LF, as the vendor's examples do.
const REPLY_NL: &str = "\r\n";
const REQUEST_NL: &str = "\n";
/// A reply names its request's command with this suffix (`start` -> `start_resp`).
pub const RESP_SUFFIX: &str = "_resp";
/// The `<type>` of a `connect` (login) request.
pub const LOGIN_TYPE: &str = "bfgs";
/// Answers of `connect` (`<result>`), `start` and `stop` (per channel).
pub const OK: &str = "ok";
pub const FALSE: &str = "false";
/// Most records one `download` returns.
pub const PAGE_SIZE: usize = 1000;
/// Longest barcode (test name) the driver sends. The facts give no limit; a UUID (36
/// characters) fits with room to spare.
pub const BARCODE_MAX_CHARS: usize = 64;
/// A frame larger than this is refused rather than buffered (a full download page is about
/// 300 kB).
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// BTS messages nest three levels (`bts/list/item`); anything much deeper is refused before
/// it costs memory.
const MAX_DEPTH: usize = 8;

/// Command names.
pub mod cmd {
    pub const CONNECT: &str = "connect";
    pub const GETDEVINFO: &str = "getdevinfo";
    pub const GETCHLSTATUS: &str = "getchlstatus";
    pub const INQUIRE: &str = "inquire";
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const INQUIREDF: &str = "inquiredf";
    pub const DOWNLOAD: &str = "download";
}

/// Step type names in `inquire` (`step_type`) and `download` (`steptype`).
pub mod step_type {
    pub const CC: &str = "cc";
    pub const CV: &str = "cv";
    pub const DC: &str = "dc";
    pub const REST: &str = "rest";
    /// No step (idle channel) or a type without a confirmed name.
    pub const NONE: &str = "--";
}

/// Units of logged records (`download`) and live values (`inquire`), as multipliers to SI.
/// The facts give `testtime` in ms; public captures show volt/curr/cap/eng as decimals in V,
/// A, Ah and Wh (`volt="1.226438"`; a 600 s step at `curr="1"` with `cap="0.1666..."`), unlike
/// the step file's mA and 0.1 mV.
pub mod units {
    pub const S_PER_TESTTIME: f64 = 1e-3;
    pub const V_PER_VOLT: f64 = 1.0;
    pub const A_PER_CURR: f64 = 1.0;
    pub const AH_PER_CAP: f64 = 1.0;
    pub const WH_PER_ENG: f64 = 1.0;
}

/// A channel's state as `getchlstatus` (and `inquire`'s `workstatus`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkStatus {
    Working,
    /// Not running: never started, or stopped by an operator or a `stop`.
    Stop,
    Finish,
    /// Protection tripped; the test ended.
    Protect,
    Pause,
}

const WORK_STATUS: [(WorkStatus, &str); 5] = [
    (WorkStatus::Working, "working"),
    (WorkStatus::Stop, "stop"),
    (WorkStatus::Finish, "finish"),
    (WorkStatus::Protect, "protect"),
    (WorkStatus::Pause, "pause"),
];

impl WorkStatus {
    pub fn name(self) -> &'static str {
        WORK_STATUS
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<WorkStatus> {
        WORK_STATUS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
    }
}

/// Why a message could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a message this codec understands: framing, XML, or a missing or unreadable field.
    #[error("{0}")]
    Malformed(String),
    /// A well-formed reply in which the server says no (`<result>false</result>`).
    #[error("{0}")]
    Refused(String),
}

fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed(message.into())
}

/// A channel as requests address it: the vendor's numbers plus the attributes the server
/// reports for it in `getdevinfo` and expects back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelRef {
    /// `ip`: the address of the unit the channel is on (a channel's own, not the server's).
    pub ip: String,
    /// `devtype`: the cycler model code.
    pub devtype: u32,
    /// `devid`, `subdevid` and `chlid`.
    pub addr: ChannelAddr,
}

// ---------------------------------------------------------------------------------------------
// Framing

/// Where a complete frame ends in a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEnd {
    /// Length of the XML document, through `</bts>`.
    pub document: usize,
    /// Length of the whole frame with its terminator: what to consume from the buffer.
    pub frame: usize,
}

/// Finds the end of the first frame in `buf`, scanning for `</bts>` from `search_from` (the
/// caller passes where the previous scan stopped, so a growing buffer is not rescanned).
/// `Ok(None)` means the frame is not complete yet.
pub fn frame_end(buf: &[u8], search_from: usize) -> Result<Option<FrameEnd>, WireError> {
    let close = BTS_CLOSE.as_bytes();
    let from = search_from.min(buf.len());
    let Some(at) = buf[from..]
        .windows(close.len())
        .position(|w| w == close)
        .map(|p| p + from)
    else {
        if buf.len() > MAX_FRAME_BYTES {
            return Err(malformed(format!(
                "no </bts> within {MAX_FRAME_BYTES} bytes: not a BTS message"
            )));
        }
        return Ok(None);
    };
    let document = at + close.len();
    let rest = &buf[document..];
    let ws = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    let tail = &rest[ws..];
    if tail.starts_with(END_MARK) {
        Ok(Some(FrameEnd {
            document,
            frame: document + ws + END_MARK.len(),
        }))
    } else if END_MARK.starts_with(tail) {
        Ok(None)
    } else {
        let shown = String::from_utf8_lossy(&tail[..tail.len().min(16)]).into_owned();
        Err(malformed(format!(
            "after </bts> expected the terminator #\\r\\n, found {shown:?}"
        )))
    }
}

/// The document of a frame, without its terminator.
fn document(frame: &str) -> &str {
    let t = frame.trim_end();
    t.strip_suffix('#').map_or(t, str::trim_end)
}

// ---------------------------------------------------------------------------------------------
// A small owned element tree (messages are small; `download` data is streamed instead)

#[derive(Debug, Default)]
struct Element {
    name: String,
    /// Attribute names and unescaped values, in document order.
    attrs: Vec<(String, String)>,
    /// Unescaped character content, untrimmed (whitespace between elements is dropped).
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn required(&self, name: &str) -> Result<&str, WireError> {
        self.attr(name)
            .ok_or_else(|| malformed(format!("<{}> has no {name} attribute", self.name)))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, WireError> {
        let v = self.required(name)?;
        number(v).ok_or_else(|| bad_number(&self.name, name, v))
    }

    fn number_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, WireError> {
        match self.attr(name) {
            None => Ok(default),
            Some(v) => number(v).ok_or_else(|| bad_number(&self.name, name, v)),
        }
    }
}

fn number<T: std::str::FromStr>(v: &str) -> Option<T> {
    v.trim().parse().ok()
}

fn bad_number(element: &str, name: &str, value: &str) -> WireError {
    malformed(format!("<{element}> {name}={value:?}: expected a number"))
}

/// Called for every `<data>` element of a `<list>` instead of storing it in the tree, so a
/// page of a thousand records costs no allocation per record.
type DataSink<'s> = &'s mut dyn FnMut(&BytesStart<'_>) -> Result<(), String>;

/// Parses a document into its root element.
fn parse_tree(doc: &str, mut data: Option<DataSink<'_>>) -> Result<Element, WireError> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let offset = reader.buffer_position();
        let fail = |message: String| malformed(format!("byte {offset}: {message}"));
        let event = reader
            .read_event()
            .map_err(|e| fail(format!("not well-formed XML: {e}")))?;
        let routed = |s: &BytesStart<'_>, stack: &[Element]| {
            stack.len() == 2 && stack[1].name == "list" && s.name().as_ref() == b"data"
        };
        match event {
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                return Err(fail(format!(
                    "a second root element <{}>",
                    String::from_utf8_lossy(s.name().as_ref())
                )));
            }
            Event::Start(s) if data.is_some() && routed(&s, &stack) => {
                if let Some(sink) = data.as_mut() {
                    sink(&s).map_err(fail)?;
                }
                reader
                    .read_to_end(s.name())
                    .map_err(|e| fail(format!("not well-formed XML: {e}")))?;
            }
            Event::Empty(s) if data.is_some() && routed(&s, &stack) => {
                if let Some(sink) = data.as_mut() {
                    sink(&s).map_err(fail)?;
                }
            }
            Event::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                stack.push(start_element(&s).map_err(fail)?);
            }
            Event::Empty(s) => {
                let e = start_element(&s).map_err(fail)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the end tag matches the open one.
                let e = stack
                    .pop()
                    .ok_or_else(|| fail("an end tag without a start tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            // Line breaks between elements carry nothing; skipping them before decoding keeps a
            // download page free of per-record allocations (CRLF decodes to a new string).
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Text(t) => {
                let s = t
                    .xml_content()
                    .map_err(|e| fail(format!("undecodable text: {e}")))?;
                push_text(&mut stack, &s).map_err(fail)?;
            }
            Event::CData(t) => {
                let s = t
                    .decode()
                    .map_err(|e| fail(format!("undecodable CDATA: {e}")))?;
                push_text(&mut stack, &s).map_err(fail)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r
                            .decode()
                            .map_err(|e| fail(format!("undecodable entity: {e}")))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| fail(format!("unknown entity &{name};")))?
                            .to_owned()
                    }
                    Err(e) => return Err(fail(format!("bad character reference: {e}"))),
                };
                push_text(&mut stack, &resolved).map_err(fail)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(malformed(format!("<{}> is never closed", open.name)));
    }
    root.ok_or_else(|| malformed("expected an XML document, found no element"))
}

fn start_element(s: &BytesStart<'_>) -> Result<Element, String> {
    let name = std::str::from_utf8(s.name().as_ref())
        .map_err(|_| "an element name that is not UTF-8".to_owned())?
        .to_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| format!("bad attribute in <{name}>: {e}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|e| format!("bad value of {key} in <{name}>: {e}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(e) => {
            e.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

/// A parsed message: its command and the other children of `<bts>`.
struct Message {
    /// `<cmd>` text, trimmed: the command, or `NAME_resp` in a reply.
    cmd: String,
    /// Every other child of `<bts>`, in document order.
    body: Vec<Element>,
}

impl Message {
    fn find(&self, name: &str) -> Option<&Element> {
        self.body.iter().find(|e| e.name == name)
    }

    /// The elements named `item` in `<list>` (other elements there are skipped).
    fn list(&self, item: &'static str) -> Result<impl Iterator<Item = &Element>, WireError> {
        let list = self
            .find("list")
            .ok_or_else(|| malformed(format!("{}: expected a <list>", self.cmd)))?;
        Ok(list.children.iter().filter(move |e| e.name == item))
    }
}

fn parse_message(frame: &str, data: Option<DataSink<'_>>) -> Result<Message, WireError> {
    let root = parse_tree(document(frame), data)?;
    if root.name != "bts" {
        return Err(malformed(format!(
            "expected the root element <bts>, found <{}>",
            root.name
        )));
    }
    let mut cmd = None;
    let mut body = Vec::with_capacity(root.children.len());
    for e in root.children {
        if e.name == "cmd" && cmd.is_none() {
            cmd = Some(e.text.trim().to_owned());
        } else {
            body.push(e);
        }
    }
    let cmd = cmd.ok_or_else(|| malformed("expected a <cmd> element"))?;
    Ok(Message { cmd, body })
}

/// Parses a reply to `command`: checks the name and turns `<result>` other than `ok` into
/// [`WireError::Refused`].
fn reply(frame: &str, command: &str, data: Option<DataSink<'_>>) -> Result<Message, WireError> {
    let m = parse_message(frame, data)?;
    if m.cmd.strip_suffix(RESP_SUFFIX) != Some(command) {
        return Err(malformed(format!(
            "expected <cmd>{command}{RESP_SUFFIX}</cmd>, found <cmd>{}</cmd>",
            m.cmd
        )));
    }
    if let Some(result) = m.find("result") {
        let answer = result.text.trim();
        if answer != OK {
            return Err(WireError::Refused(format!(
                "the server answered {command} with <result>{answer}</result>"
            )));
        }
    }
    Ok(m)
}

/// The channel named by an element's `ip devtype devid subdevid` and `chlid_attr`. `ip` and
/// `devtype` are optional (some messages omit them).
fn channel(e: &Element, chlid_attr: &str) -> Result<ChannelRef, WireError> {
    Ok(ChannelRef {
        ip: e.attr("ip").unwrap_or("").to_owned(),
        devtype: e.number_or("devtype", 0)?,
        addr: ChannelAddr {
            unit: e.number("devid")?,
            sub_unit: e.number("subdevid")?,
            channel: e.number(chlid_attr)?,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

fn begin(nl: &str, command: &str) -> String {
    let mut s = String::with_capacity(512);
    s.push_str(XML_DECL);
    s.push_str(nl);
    s.push_str(BTS_OPEN);
    s.push_str(nl);
    let _ = write!(s, "<cmd>{}</cmd>{nl}", escape(command));
    s
}

fn finish(mut s: String) -> String {
    s.push_str(BTS_CLOSE);
    s.push_str(TERMINATOR);
    s
}

fn attr(s: &mut String, name: &str, value: &str) {
    let _ = write!(s, " {name}=\"{}\"", escape(value));
}

fn num(s: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(s, " {name}=\"{value}\"");
}

/// `ip devtype devid subdevid` and the channel number under `chlid_attr`.
fn channel_attrs(s: &mut String, c: &ChannelRef, chlid_attr: &str, with_ip: bool) {
    if with_ip {
        attr(s, "ip", &c.ip);
    }
    num(s, "devtype", c.devtype);
    num(s, "devid", c.addr.unit);
    num(s, "subdevid", c.addr.sub_unit);
    num(s, chlid_attr, c.addr.channel);
}

/// `<list count="n">`, one line per item written by `item`, `</list>`.
fn list<T>(s: &mut String, nl: &str, items: &[T], mut item: impl FnMut(&mut String, &T)) {
    let _ = write!(s, "<list count=\"{}\">{nl}", items.len());
    for i in items {
        item(s, i);
        s.push_str(nl);
    }
    let _ = write!(s, "</list>{nl}");
}

// ---------------------------------------------------------------------------------------------
// Requests (written by the client, parsed by the simulator)

/// One channel of a `start`: what to run and under which barcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartItem {
    /// The channel to start.
    pub channel: ChannelRef,
    /// The test's name on the cycler (shown in BTS, returned by `inquire`).
    pub barcode: String,
    /// The step file as the BTS PC sees it (Windows path).
    pub path: String,
}

/// A `download` page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    /// The channel whose log to read.
    pub channel: ChannelRef,
    /// Auxiliary channel whose values come with the records (0: none).
    pub auxid: u32,
    /// The test whose log to read (0: the channel's latest).
    pub testid: u64,
    /// First record index (seqid), from 1.
    pub startpos: u64,
    /// At most this many records (the server gives at most [`PAGE_SIZE`]).
    pub count: u64,
}

/// A request as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The login every connection starts with.
    Connect {
        username: String,
        password: String,
        /// `<type>`: [`LOGIN_TYPE`] for API clients.
        login_type: String,
    },
    GetDevInfo,
    GetChlStatus(Vec<ChannelRef>),
    Inquire(Vec<ChannelRef>),
    Start {
        items: Vec<StartItem>,
        /// `<backup backupdir="..">`: where the BTS PC keeps the test's data file.
        backup_dir: Option<String>,
    },
    Stop(Vec<ChannelRef>),
    InquireDf(Vec<ChannelRef>),
    Download(DownloadRequest),
    /// A well-formed request for a command this codec does not model (`light`, `goto`...).
    Other(String),
}

impl Request {
    /// The command name, for the reply.
    pub fn command(&self) -> &str {
        match self {
            Request::Connect { .. } => cmd::CONNECT,
            Request::GetDevInfo => cmd::GETDEVINFO,
            Request::GetChlStatus(_) => cmd::GETCHLSTATUS,
            Request::Inquire(_) => cmd::INQUIRE,
            Request::Start { .. } => cmd::START,
            Request::Stop(_) => cmd::STOP,
            Request::InquireDf(_) => cmd::INQUIREDF,
            Request::Download(_) => cmd::DOWNLOAD,
            Request::Other(name) => name,
        }
    }
}

pub fn connect_request(username: &str, password: &str) -> String {
    let mut s = begin(REQUEST_NL, cmd::CONNECT);
    let _ = write!(
        s,
        "<username>{}</username>{REQUEST_NL}<password>{}</password>{REQUEST_NL}<type>{LOGIN_TYPE}</type>{REQUEST_NL}",
        escape(username),
        escape(password)
    );
    finish(s)
}

pub fn getdevinfo_request() -> String {
    finish(begin(REQUEST_NL, cmd::GETDEVINFO))
}

pub fn getchlstatus_request(channels: &[ChannelRef]) -> String {
    let mut s = begin(REQUEST_NL, cmd::GETCHLSTATUS);
    list(&mut s, REQUEST_NL, channels, |s, c| {
        s.push_str("<status");
        channel_attrs(s, c, "chlid", true);
        s.push_str(">true</status>");
    });
    finish(s)
}

/// `inquire` with `aux="0" barcode="1"`: no auxiliary values, with the barcode.
pub fn inquire_request(channels: &[ChannelRef]) -> String {
    let mut s = begin(REQUEST_NL, cmd::INQUIRE);
    list(&mut s, REQUEST_NL, channels, |s, c| {
        s.push_str("<inquire");
        channel_attrs(s, c, "chlid", true);
        s.push_str(" aux=\"0\" barcode=\"1\">true</inquire>");
    });
    finish(s)
}

/// `start` with the backup settings: the data file goes to `backup_dir` on the BTS PC, named
/// by barcode, backed up as the test runs.
pub fn start_request(items: &[StartItem], backup_dir: &str) -> String {
    let mut s = begin(REQUEST_NL, cmd::START);
    let _ = write!(s, "<list count=\"{}\">{REQUEST_NL}", items.len());
    for i in items {
        s.push_str("<start");
        channel_attrs(&mut s, &i.channel, "chlid", true);
        attr(&mut s, "barcode", &i.barcode);
        let _ = write!(s, ">{}</start>{REQUEST_NL}", escape(i.path.as_str()));
    }
    s.push_str("<backup");
    attr(&mut s, "backupdir", backup_dir);
    s.push_str(
        " remotedir=\"\" filenametype=\"0\" customfilename=\"\" addtimewhenrepeat=\"0\" \
         createdirbydate=\"0\" filetype=\"0\" backupontime=\"1\" backupontimeinterval=\"720\" \
         backupfree=\"1\"/>",
    );
    let _ = write!(s, "{REQUEST_NL}</list>{REQUEST_NL}");
    finish(s)
}

pub fn stop_request(channels: &[ChannelRef]) -> String {
    let mut s = begin(REQUEST_NL, cmd::STOP);
    list(&mut s, REQUEST_NL, channels, |s, c| {
        s.push_str("<stop");
        channel_attrs(s, c, "chlid", true);
        s.push_str(">true</stop>");
    });
    finish(s)
}

/// `inquiredf` for the channels' latest tests (`testid="0"`).
pub fn inquiredf_request(channels: &[ChannelRef]) -> String {
    let mut s = begin(REQUEST_NL, cmd::INQUIREDF);
    list(&mut s, REQUEST_NL, channels, |s, c| {
        s.push_str("<chl");
        channel_attrs(s, c, "chlid", false);
        s.push_str(" testid=\"0\"/>");
    });
    finish(s)
}

pub fn download_request(r: &DownloadRequest) -> String {
    let mut s = begin(REQUEST_NL, cmd::DOWNLOAD);
    s.push_str("<download");
    channel_attrs(&mut s, &r.channel, "chlid", false);
    num(&mut s, "auxid", r.auxid);
    num(&mut s, "testid", r.testid);
    num(&mut s, "startpos", r.startpos);
    num(&mut s, "count", r.count);
    let _ = write!(s, "/>{REQUEST_NL}");
    finish(s)
}

/// Parses a request, strictly: the XML declaration, `<bts>` and `<cmd>` must be there, and
/// every channel must be fully addressed.
pub fn parse_request(frame: &str) -> Result<Request, WireError> {
    let doc = document(frame);
    if !doc.trim_start().starts_with("<?xml") {
        return Err(malformed("a request must start with the XML declaration"));
    }
    let m = parse_message(doc, None)?;
    let channels = |item: &'static str| -> Result<Vec<ChannelRef>, WireError> {
        m.list(item)?.map(|e| channel(e, "chlid")).collect()
    };
    let text = |name: &str| -> Result<String, WireError> {
        m.find(name)
            .map(|e| e.text.trim().to_owned())
            .ok_or_else(|| malformed(format!("{}: expected <{name}>", m.cmd)))
    };
    Ok(match m.cmd.as_str() {
        cmd::CONNECT => Request::Connect {
            username: text("username")?,
            password: text("password")?,
            login_type: text("type")?,
        },
        cmd::GETDEVINFO => Request::GetDevInfo,
        cmd::GETCHLSTATUS => Request::GetChlStatus(channels("status")?),
        cmd::INQUIRE => Request::Inquire(channels("inquire")?),
        cmd::STOP => Request::Stop(channels("stop")?),
        cmd::INQUIREDF => Request::InquireDf(channels("chl")?),
        cmd::START => {
            let items = m
                .list("start")?
                .map(|e| {
                    Ok(StartItem {
                        channel: channel(e, "chlid")?,
                        barcode: e.attr("barcode").unwrap_or("").to_owned(),
                        path: e.text.trim().to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, WireError>>()?;
            // The backup settings sit in the list or next to it, as clients write them.
            let backup = m
                .find("list")
                .and_then(|l| l.find("backup"))
                .or_else(|| m.find("backup"));
            Request::Start {
                items,
                backup_dir: backup.and_then(|b| b.attr("backupdir")).map(str::to_owned),
            }
        }
        cmd::DOWNLOAD => {
            let e = m
                .find("download")
                .ok_or_else(|| malformed("download: expected a <download> element"))?;
            Request::Download(DownloadRequest {
                channel: channel(e, "chlid")?,
                auxid: e.number_or("auxid", 0)?,
                testid: e.number_or("testid", 0)?,
                startpos: e.number("startpos")?,
                count: e.number("count")?,
            })
        }
        "" => return Err(malformed("an empty <cmd>")),
        other => Request::Other(other.to_owned()),
    })
}

// ---------------------------------------------------------------------------------------------
// Replies (written by the simulator, parsed by the client)

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
    /// The status text, kept raw (see [`WorkStatus::from_name`]) so one unknown word does
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
    /// A [`WorkStatus`] name, raw.
    pub workstatus: String,
    /// The barcode the test was started under: the name that ties it to its owner.
    pub barcode: String,
    /// Live values, in the [`units`] of records.
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
    /// A [`step_type`] name.
    pub step_type: &'a str,
    /// Wall time of the record, Unix seconds (written as `atime`).
    pub unix_time_s: f64,
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
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        s,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
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
            let chlid = if e.attr("Channelid").is_some() {
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
    match e.text.trim() {
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
                status: e.text.trim().to_owned(),
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
        e.attr(name)
            .map(|v| number(v).ok_or_else(|| bad_number("inquire", name, v)))
            .transpose()
    };
    Ok(InquireItem {
        channel: ChannelRef {
            ip: e.attr("ip").unwrap_or("").to_owned(),
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
        step_type: e.attr("step_type").unwrap_or(step_type::NONE).to_owned(),
        workstatus: e.attr("workstatus").unwrap_or("").trim().to_owned(),
        barcode: e.attr("barcode").unwrap_or("").trim().to_owned(),
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
            let ok = match e.text.trim() {
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
                complete: e.text.trim() == "true",
            })
        })
        .collect()
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

// ---------------------------------------------------------------------------------------------
// Names and paths

/// The barcode a test is started under: the test name, cut to [`BARCODE_MAX_CHARS`].
pub fn barcode(test: &str) -> String {
    test.trim().chars().take(BARCODE_MAX_CHARS).collect()
}

/// How the step folder on this machine appears on the BTS PC, which reads step files itself
/// (the API has no upload): a shared folder mounted here, or the same folder when the daemon
/// runs on that PC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    /// The folder as this machine sees it.
    pub local: PathBuf,
    /// The same folder as the BTS PC sees it (`D:\cyclerd\steps`, `\\lab-pc\steps`); `None`
    /// when both see the same path.
    pub remote: Option<String>,
}

impl PathMap {
    /// The path the BTS PC opens for `file_name` in the folder.
    pub fn remote_path(&self, file_name: &str) -> String {
        match &self.remote {
            Some(prefix) => format!("{}\\{file_name}", prefix.trim_end_matches(['\\', '/'])),
            None => self.local.join(file_name).display().to_string(),
        }
    }

    /// The local file behind a path the BTS PC was given, if it lies in the folder. Windows
    /// paths compare case-insensitively and with either separator; `..` is refused.
    pub fn local_path(&self, remote: &str) -> Option<PathBuf> {
        let Some(prefix) = &self.remote else {
            return Some(PathBuf::from(remote));
        };
        let norm = |s: &str| s.replace('/', "\\");
        let prefix = norm(prefix.trim_end_matches(['\\', '/']));
        let remote = norm(remote);
        let head = remote.get(..prefix.len())?;
        let rest = remote.get(prefix.len()..)?.strip_prefix('\\')?;
        if !head.eq_ignore_ascii_case(&prefix) {
            return None;
        }
        let mut local = self.local.clone();
        for part in rest.split('\\').filter(|p| !p.is_empty()) {
            if Path::new(part)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return None;
            }
            local.push(part);
        }
        Some(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn frames_end_at_either_terminator_and_wait_for_the_rest() {
        let full = b"<bts>x</bts>\n\n#\r\nnext";
        assert_eq!(
            frame_end(full, 0).unwrap(),
            Some(FrameEnd {
                document: 12,
                frame: 17
            })
        );
        assert_eq!(
            frame_end(b"<bts></bts>#\r\n", 0).unwrap().unwrap().frame,
            14
        );
        assert_eq!(frame_end(b"<bts></bts>\n\n#\r", 0).unwrap(), None);
        assert_eq!(frame_end(b"<bts></b", 0).unwrap(), None);
        assert!(frame_end(b"<bts></bts>garbage", 0).is_err());
        // A scan resumed past the start still finds the end tag.
        assert!(frame_end(full, 5).unwrap().is_some());
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

    #[test]
    fn work_status_names_round_trip() {
        for (s, n) in WORK_STATUS {
            assert_eq!(s.name(), n);
            assert_eq!(WorkStatus::from_name(n), Some(s));
        }
        assert_eq!(WorkStatus::from_name("false"), None);
    }

    #[test]
    fn barcodes_are_cut_to_the_limit() {
        assert_eq!(barcode(" t1 "), "t1");
        assert_eq!(barcode(&"é".repeat(100)).chars().count(), BARCODE_MAX_CHARS);
    }

    #[test]
    fn step_paths_map_between_this_machine_and_the_bts_pc() {
        let map = PathMap {
            local: PathBuf::from("/srv/steps"),
            remote: Some(r"D:\cyclerd\steps\".into()),
        };
        assert_eq!(map.remote_path("a.xml"), r"D:\cyclerd\steps\a.xml");
        assert_eq!(
            map.local_path(r"d:/CYCLERD\steps\a.xml"),
            Some(PathBuf::from("/srv/steps/a.xml"))
        );
        assert_eq!(map.local_path(r"D:\cyclerd\steps\..\x.xml"), None);
        assert_eq!(map.local_path(r"E:\other\a.xml"), None);
        assert_eq!(map.local_path(r"D:\cyclerd\stepsX\a.xml"), None);
        let same = PathMap {
            local: PathBuf::from("/srv/steps"),
            remote: None,
        };
        assert_eq!(
            same.local_path(&same.remote_path("a.xml")),
            Some(PathBuf::from("/srv/steps/a.xml"))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
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
}
