//! Framing: where a message ends in a byte stream, and the document inside a frame.

use super::{WireError, malformed};

/// The first line of every message.
pub const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>"#;
/// The root element of every message.
pub const BTS_OPEN: &str = r#"<bts version="1.0">"#;
pub const BTS_CLOSE: &str = "</bts>";
/// What follows `</bts>` in every message the driver and the simulator write.
pub const TERMINATOR: &str = "\n\n#\r\n";
/// What ends a frame after `</bts>` and optional whitespace: both terminators end in it.
const END_MARK: &[u8] = b"#\r\n";
/// A frame larger than this is refused rather than buffered (a full download page is about
/// 300 kB).
pub const MAX_FRAME_BYTES: usize = 8 << 20;

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

/// Where to resume scanning a growing buffer after [`frame_end`] found no complete frame:
/// at a `</bts>` that is already there (its terminator is still to come: a scan resumed past
/// it would never find the frame's end), else where `</bts>` could still start.
pub fn resume_scan(buf: &[u8]) -> usize {
    let close = BTS_CLOSE.as_bytes();
    // The close tag, whitespace and a partial terminator fit in the last bytes.
    let from = buf.len().saturating_sub(close.len() + 64);
    buf[from..]
        .windows(close.len())
        .rposition(|w| w == close)
        .map_or(buf.len().saturating_sub(close.len()), |p| from + p)
}

/// The document of a frame, without its terminator.
pub(super) fn document(frame: &str) -> &str {
    let t = frame.trim_end();
    t.strip_suffix('#').map_or(t, str::trim_end)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_frame_whose_terminator_arrives_in_a_later_read_is_found() {
        // Read by read, as the client and the simulator scan: split after `</bts>` and its
        // blank lines, before `#` (a start request of one length did this and was never
        // answered).
        let frame = b"<bts><cmd>start</cmd></bts>\n\n#\r\n";
        for split in 1..frame.len() {
            let mut buf = Vec::new();
            let mut scanned = 0;
            let mut found = None;
            for part in [&frame[..split], &frame[split..]] {
                buf.extend_from_slice(part);
                match frame_end(&buf, scanned).unwrap() {
                    Some(end) => found = Some(end),
                    None => scanned = resume_scan(&buf),
                }
            }
            assert_eq!(
                found.map(|f| f.frame),
                Some(frame.len()),
                "split at {split}"
            );
        }
    }
}
