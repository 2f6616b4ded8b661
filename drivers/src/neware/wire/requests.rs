//! Requests: written by the client, parsed (strictly) by the simulator.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::framing::document;
use super::message::{
    Fields, REQUEST_NL, attr, begin, channel, channel_attrs, finish, list, num, parse_message,
};
use super::tables::{LOGIN_TYPE, cmd};
use super::{ChannelRef, WireError, malformed};

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
    /// At most this many records (the server gives at most [`PAGE_SIZE`](super::PAGE_SIZE)).
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
            .map(|e| e.text_or_empty().trim().to_owned())
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
                        barcode: e.get_attr("barcode").unwrap_or("").to_owned(),
                        path: e.text_or_empty().trim().to_owned(),
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
                backup_dir: backup
                    .and_then(|b| b.get_attr("backupdir"))
                    .map(str::to_owned),
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
