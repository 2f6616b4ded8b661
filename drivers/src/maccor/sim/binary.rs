//! The binary protocol: frames to requests and responses to frames, and the (1,6) file
//! transfer, both directions, of one connection's session.

use super::{MAX_FILE_BYTES, RecordLog, Request, Response, Tester};
use crate::maccor::wire::{self, DirectStart, Frame, Function, Output, Packet, Reading, StartTest};

pub(super) fn binary_request(frame: &Frame) -> Option<Request> {
    let chan = frame.chan;
    Some(match frame.function {
        Function { class: 0, .. } => Request::Echo,
        wire::VERSION => Request::Version,
        wire::SYSTEM_INFO => Request::SystemInfo,
        wire::STATUS => Request::Status {
            first: chan,
            count: frame.len,
        },
        wire::READING => Request::Reading { chan },
        wire::AUX_VALUES => Request::AuxValues { chan },
        wire::SELECT => Request::Select { chan },
        wire::START => Request::Start {
            chan,
            start: StartTest::from_frame(frame).ok()?,
            select: false,
        },
        wire::SUSPEND => Request::Suspend { chan },
        wire::RESUME => Request::Resume { chan },
        wire::RESET => Request::Reset { chan },
        wire::DIRECT_START => Request::DirectStart {
            chan,
            start: DirectStart::from_frame(frame).ok()?,
        },
        wire::DIRECT_OUTPUT => Request::DirectOutput {
            chan,
            output: Output::from_frame(frame).ok()?,
        },
        _ => return None,
    })
}

/// An empty reply: how the simulator answers a binary request it refuses.
pub(super) fn empty(frame: &Frame) -> Frame {
    Frame::with_data(frame.function, frame.chan, Vec::new())
}

/// A file being written to the tester on one connection.
pub(super) struct Upload {
    /// Upper-case procedure name without `.000`.
    pub(super) key: String,
    pub(super) next_block: u16,
    pub(super) bytes: Vec<u8>,
}

/// Records being read from the tester on one connection.
pub(super) struct Download {
    pub(super) chan: u16,
    pub(super) bytes: Vec<u8>,
    /// The last block sent.
    pub(super) block: u16,
}

/// One binary connection's transfer state.
#[derive(Default)]
pub(super) struct Session {
    pub(super) upload: Option<Upload>,
    pub(super) download: Option<Download>,
}

impl Download {
    /// DATA block `block` of the records.
    pub(super) fn data(&self, block: u16) -> Packet {
        let start = (usize::from(block) - 1) * wire::BLOCK_SIZE;
        let end = (start + wire::BLOCK_SIZE).min(self.bytes.len());
        Packet::Data {
            block,
            bytes: self.bytes.get(start..end).unwrap_or_default().to_vec(),
        }
    }

    /// Whether block `block` ended the transfer (shorter than a full one).
    pub(super) fn ends_with(&self, block: u16) -> bool {
        usize::from(block) * wire::BLOCK_SIZE > self.bytes.len()
    }
}

pub(super) fn transfer_error(code: u16, message: &str) -> Packet {
    Packet::Error {
        code,
        message: message.into(),
    }
}

/// One (1,6) packet; `None` sends nothing (the acknowledgement of a download's last block).
pub(super) fn transfer(tester: &mut Tester, session: &mut Session, frame: &Frame) -> Option<Frame> {
    use wire::transfer_error as e;
    let chan = frame.chan;
    let packet = match Packet::from_frame(frame) {
        Ok(p) => p,
        Err(err) => {
            return Some(transfer_error(e::ILLEGAL_OPERATION, &err.to_string()).to_frame(chan));
        }
    };
    let reply = match packet {
        Packet::Write { file_type, name } => {
            let stem = name
                .rsplit_once('.')
                .filter(|(_, ext)| ext.eq_ignore_ascii_case("000"))
                .map(|(stem, _)| stem);
            match stem {
                _ if file_type != wire::FILE_TYPE_PROCEDURE => transfer_error(
                    e::ACCESS_VIOLATION,
                    "only procedures (file type 3) are accepted",
                ),
                Some(stem)
                    if !stem.is_empty()
                        && stem.len() <= wire::NAME_LEN
                        && !stem.contains(['/', '\\', ':']) =>
                {
                    session.upload = Some(Upload {
                        key: stem.to_ascii_uppercase(),
                        next_block: 1,
                        bytes: Vec::new(),
                    });
                    Packet::Ack { block: 0 }
                }
                _ => transfer_error(
                    e::ACCESS_VIOLATION,
                    "a procedure name is up to 25 characters and ends in .000",
                ),
            }
        }
        Packet::Data { block, bytes } => match &mut session.upload {
            Some(up) if block == up.next_block => {
                up.bytes.extend_from_slice(&bytes);
                if up.bytes.len() > MAX_FILE_BYTES {
                    session.upload = None;
                    transfer_error(e::NOT_DEFINED, "file too large")
                } else {
                    up.next_block = up.next_block.wrapping_add(1);
                    if bytes.len() < wire::BLOCK_SIZE
                        && let Some(up) = session.upload.take()
                    {
                        let text = String::from_utf8_lossy(&up.bytes).into_owned();
                        tester.procedures.insert(up.key, text);
                    }
                    Packet::Ack { block }
                }
            }
            Some(up) => transfer_error(
                e::ILLEGAL_OPERATION,
                &format!("expected block {}, got {block}", up.next_block),
            ),
            None => transfer_error(e::ILLEGAL_OPERATION, "no transfer open"),
        },
        Packet::Read {
            file_type,
            from,
            max,
        } => {
            let c = tester.channel(chan);
            match c {
                _ if tester.config.record_log == RecordLog::Ignored => return None,
                _ if tester.config.record_log == RecordLog::Refused => {
                    transfer_error(e::ILLEGAL_OPERATION, "unknown opcode")
                }
                Some(c) if file_type == wire::FILE_TYPE_RECORD_LOG => {
                    tester.advance();
                    let page = tester.channels[c].log.page(u64::from(from), max as usize);
                    let download = Download {
                        chan,
                        bytes: page.iter().flat_map(Reading::to_bytes).collect(),
                        block: 1,
                    };
                    let first = download.data(1);
                    session.download = (!download.ends_with(1)).then_some(download);
                    first
                }
                _ => transfer_error(e::NOT_FOUND, "no such channel or file type"),
            }
        }
        Packet::Ack { block } => match &mut session.download {
            Some(d) if block == d.block && d.chan == chan => {
                d.block += 1;
                let next = d.data(d.block);
                if d.ends_with(d.block) {
                    session.download = None;
                }
                next
            }
            // The acknowledgement of a download's last block needs no answer.
            None => return None,
            Some(_) => transfer_error(e::ILLEGAL_OPERATION, "unexpected acknowledgement"),
        },
        Packet::Error { .. } => {
            session.upload = None;
            session.download = None;
            return None;
        }
    };
    Some(reply.to_frame(chan))
}

pub(super) fn binary_reply(
    tester: &mut Tester,
    session: &mut Session,
    frame: &Frame,
) -> Option<Frame> {
    if tester.faults.failing() {
        return Some(empty(frame));
    }
    if frame.function == wire::FILE_TRANSFER {
        return transfer(tester, session, frame);
    }
    let Some(request) = binary_request(frame) else {
        return Some(empty(frame));
    };
    let f = frame.function;
    Some(match tester.handle(request) {
        Response::Echo => Frame::with_data(f, frame.chan, frame.data.clone()),
        Response::Version(v) => Frame::with_data(f, frame.chan, v.to_bytes()),
        Response::SystemInfo(s) => Frame::with_data(f, frame.chan, s.to_bytes()),
        Response::Status(block) => block.to_frame(),
        Response::Reading { chan, reading } => reading.to_frame(chan),
        Response::AuxValues { chan, aux } => aux.to_frame(chan),
        Response::Result { chan, code } => wire::result_frame(f, chan, code),
        Response::Illegal => empty(frame),
    })
}
