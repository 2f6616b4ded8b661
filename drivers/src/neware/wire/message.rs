//! The envelope every message shares: `<bts>` and `<cmd>`, `<list count>`, the channel
//! attributes and `<result>`. Written as text (the vendor's exact line breaks), read through
//! the workspace's XML tree with the field helpers the message parsers use.

use std::fmt::Write as _;

use cyclerd_protocols::xml::{DataSink, Element, Parser, Stream};
use quick_xml::escape::escape;

use super::framing::{BTS_CLOSE, BTS_OPEN, TERMINATOR, XML_DECL, document};
use super::tables::{OK, RESP_SUFFIX};
use super::{ChannelRef, WireError, malformed};
use crate::cycler::ChannelAddr;

/// Replies break lines with CRLF; requests with LF, as the vendor's examples do.
pub(super) const REPLY_NL: &str = "\r\n";
pub(super) const REQUEST_NL: &str = "\n";
/// BTS messages nest three levels (`bts/list/item`); anything much deeper is refused before
/// it costs memory.
const MAX_DEPTH: usize = 8;

// Reading

/// The attribute readers of message elements, answering with [`WireError`]s.
pub(super) trait Fields {
    fn required(&self, name: &str) -> Result<&str, WireError>;
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, WireError>;
    fn number_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, WireError>;
}

impl Fields for Element {
    fn required(&self, name: &str) -> Result<&str, WireError> {
        self.get_attr(name)
            .ok_or_else(|| malformed(format!("<{}> has no {name} attribute", self.name)))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, WireError> {
        let v = self.required(name)?;
        number(v).ok_or_else(|| bad_number(&self.name, name, v))
    }

    fn number_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, WireError> {
        match self.get_attr(name) {
            None => Ok(default),
            Some(v) => number(v).ok_or_else(|| bad_number(&self.name, name, v)),
        }
    }
}

pub(super) fn number<T: std::str::FromStr>(v: &str) -> Option<T> {
    v.trim().parse().ok()
}

pub(super) fn bad_number(element: &str, name: &str, value: &str) -> WireError {
    malformed(format!("<{element}> {name}={value:?}: expected a number"))
}

/// Parses a document into its root element; with `data`, every `<data>` of `bts/list` goes to
/// it instead of into the tree (a download page costs no allocation per record).
fn parse_tree(doc: &str, data: Option<DataSink<'_>>) -> Result<Element, WireError> {
    let parser = Parser {
        max_depth: MAX_DEPTH,
        // Every text of a message is trimmed; skipping the line breaks saves their decoding.
        skip_blank_text: true,
        stream: data.map(|sink| Stream {
            depth: 2,
            parent: "list",
            element: "data",
            sink,
        }),
    };
    parser.parse(doc).map_err(|e| malformed(e.to_string()))
}

/// A parsed message: its command and the other children of `<bts>`.
pub(super) struct Message {
    /// `<cmd>` text, trimmed: the command, or `NAME_resp` in a reply.
    pub(super) cmd: String,
    /// Every other child of `<bts>`, in document order.
    pub(super) body: Vec<Element>,
}

impl Message {
    pub(super) fn find(&self, name: &str) -> Option<&Element> {
        self.body.iter().find(|e| e.name == name)
    }

    /// The elements named `item` in `<list>` (other elements there are skipped).
    pub(super) fn list(
        &self,
        item: &'static str,
    ) -> Result<impl Iterator<Item = &Element>, WireError> {
        let list = self
            .find("list")
            .ok_or_else(|| malformed(format!("{}: expected a <list>", self.cmd)))?;
        Ok(list.children.iter().filter(move |e| e.name == item))
    }
}

pub(super) fn parse_message(frame: &str, data: Option<DataSink<'_>>) -> Result<Message, WireError> {
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
            cmd = Some(e.text_or_empty().trim().to_owned());
        } else {
            body.push(e);
        }
    }
    let cmd = cmd.ok_or_else(|| malformed("expected a <cmd> element"))?;
    Ok(Message { cmd, body })
}

/// Parses a reply to `command`: checks the name and turns `<result>` other than `ok` into
/// [`WireError::Refused`].
pub(super) fn reply(
    frame: &str,
    command: &str,
    data: Option<DataSink<'_>>,
) -> Result<Message, WireError> {
    let m = parse_message(frame, data)?;
    if m.cmd.strip_suffix(RESP_SUFFIX) != Some(command) {
        return Err(malformed(format!(
            "expected <cmd>{command}{RESP_SUFFIX}</cmd>, found <cmd>{}</cmd>",
            m.cmd
        )));
    }
    if let Some(result) = m.find("result") {
        let answer = result.text_or_empty().trim();
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
pub(super) fn channel(e: &Element, chlid_attr: &str) -> Result<ChannelRef, WireError> {
    Ok(ChannelRef {
        ip: e.get_attr("ip").unwrap_or("").to_owned(),
        devtype: e.number_or("devtype", 0)?,
        addr: ChannelAddr {
            unit: e.number("devid")?,
            sub_unit: e.number("subdevid")?,
            channel: e.number(chlid_attr)?,
        },
    })
}

// Writing

pub(super) fn begin(nl: &str, command: &str) -> String {
    let mut s = String::with_capacity(512);
    s.push_str(XML_DECL);
    s.push_str(nl);
    s.push_str(BTS_OPEN);
    s.push_str(nl);
    let _ = write!(s, "<cmd>{}</cmd>{nl}", escape(command));
    s
}

pub(super) fn finish(mut s: String) -> String {
    s.push_str(BTS_CLOSE);
    s.push_str(TERMINATOR);
    s
}

pub(super) fn attr(s: &mut String, name: &str, value: &str) {
    let _ = write!(s, " {name}=\"{}\"", escape(value));
}

pub(super) fn num(s: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(s, " {name}=\"{value}\"");
}

/// `ip devtype devid subdevid` and the channel number under `chlid_attr`.
pub(super) fn channel_attrs(s: &mut String, c: &ChannelRef, chlid_attr: &str, with_ip: bool) {
    if with_ip {
        attr(s, "ip", &c.ip);
    }
    num(s, "devtype", c.devtype);
    num(s, "devid", c.addr.unit);
    num(s, "subdevid", c.addr.sub_unit);
    num(s, chlid_attr, c.addr.channel);
}

/// `<list count="n">`, one line per item written by `item`, `</list>`.
pub(super) fn list<T>(
    s: &mut String,
    nl: &str,
    items: &[T],
    mut item: impl FnMut(&mut String, &T),
) {
    let _ = write!(s, "<list count=\"{}\">{nl}", items.len());
    for i in items {
        item(s, i);
        s.push_str(nl);
    }
    let _ = write!(s, "</list>{nl}");
}
