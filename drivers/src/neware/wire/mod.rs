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
//!
//! - `tables`: the device facts: port, command names, step types, record units, status words.
//! - `framing`: where a frame ends in a byte stream, and its document.
//! - `message`: the envelope every message shares (`<bts>`, `<cmd>`, `<list>`, channel
//!   attributes), written as text and read through the workspace's XML tree
//!   ([`cyclerd_protocols::xml`]).
//! - `requests`, `replies`, `download`: one builder and one parser per message; `download`
//!   holds the log page, whose records stream straight from the XML.
//! - `paths`: barcodes and the step folder as the BTS PC sees it.

mod download;
mod framing;
mod message;
mod paths;
mod replies;
mod requests;
mod tables;

pub use download::{DataRow, DownloadHeader, download_reply, parse_download_reply};
pub use framing::{
    BTS_CLOSE, BTS_OPEN, FrameEnd, MAX_FRAME_BYTES, TERMINATOR, XML_DECL, frame_end, resume_scan,
};
pub use paths::{BARCODE_MAX_CHARS, PathMap, barcode};
pub use replies::{
    ChlStatusItem, DevChannel, DfItem, InquireItem, ResultItem, connect_reply, getchlstatus_reply,
    getdevinfo_reply, inquire_reply, inquiredf_reply, parse_connect_reply,
    parse_getchlstatus_reply, parse_getdevinfo_reply, parse_inquire_reply, parse_inquiredf_reply,
    parse_result_reply, refusal_reply, result_reply,
};
pub use requests::{
    DownloadRequest, Request, StartItem, connect_request, download_request, getchlstatus_request,
    getdevinfo_request, inquire_request, inquiredf_request, parse_request, start_request,
    stop_request,
};
pub use tables::{
    DEFAULT_PORT, FALSE, LOGIN_TYPE, OK, PAGE_SIZE, RESP_SUFFIX, WorkStatus, cmd, step_type, units,
};

use crate::cycler::ChannelAddr;

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

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
