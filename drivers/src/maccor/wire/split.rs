//! MacNet JSON framing: one complete object at a time off a byte stream. The facts frame
//! JSON-RPC by object, not by line: the open Python client sends each request pretty-printed
//! over several lines with no terminator, and `\r\n`, `\n` or nothing may separate objects.
//! [`JsonSplitter`] counts braces outside strings (escapes included), so it cuts objects
//! without parsing them; parsing stays with [`super::parse_json_request`] and
//! [`super::parse_json_reply`].

/// Why the splitter gave no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Bytes between objects that cannot start one (dropped up to the next `{`).
    #[error("{0} bytes that do not start a JSON object")]
    Garbage(usize),
    /// An object still open after `max` bytes: the stream has lost its place (the buffer is
    /// dropped), so the connection should close.
    #[error("a JSON object longer than {0} bytes")]
    TooLong(usize),
}

/// Cuts complete JSON objects off a byte stream, bounded to `max` bytes per object.
#[derive(Debug, Clone)]
pub struct JsonSplitter {
    buf: Vec<u8>,
    /// Bytes of the object under way (at the start of `buf`) already scanned; 0 between
    /// objects.
    scanned: usize,
    /// Braces open outside strings.
    depth: usize,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl JsonSplitter {
    /// A splitter for objects up to `max` bytes.
    pub fn new(max: usize) -> JsonSplitter {
        JsonSplitter {
            buf: Vec::new(),
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max,
        }
    }

    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether part of an object (or garbage) is buffered, beyond whitespace.
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    fn reset(&mut self) {
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// The next complete object (its bytes, without what separates it from the next), `None`
    /// until one is complete, or why the buffered bytes are not one.
    pub fn next_object(&mut self) -> Result<Option<Vec<u8>>, SplitError> {
        if self.scanned == 0 {
            let blank = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..blank);
            match self.buf.first() {
                None => return Ok(None),
                Some(b'{') => {}
                Some(_) => {
                    let n = self
                        .buf
                        .iter()
                        .position(|&b| b == b'{')
                        .unwrap_or(self.buf.len());
                    self.buf.drain(..n);
                    return Err(SplitError::Garbage(n));
                }
            }
        }
        while self.scanned < self.buf.len() {
            if self.scanned >= self.max {
                break;
            }
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' => self.depth += 1,
                b'}' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let object: Vec<u8> = self.buf.drain(..self.scanned).collect();
                        self.reset();
                        return Ok(Some(object));
                    }
                }
                _ => {}
            }
        }
        if self.scanned >= self.max {
            self.buf.clear();
            self.reset();
            return Err(SplitError::TooLong(self.max));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn all(s: &mut JsonSplitter) -> Vec<Result<Vec<u8>, SplitError>> {
        let mut out = Vec::new();
        loop {
            match s.next_object() {
                Ok(None) => return out,
                Ok(Some(o)) => out.push(Ok(o)),
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn braces_and_escaped_quotes_inside_strings_do_not_end_an_object() {
        let mut s = JsonSplitter::new(1024);
        let text = r#"{"a":"}{\"}\\","b":{"c":[{}]}}"#;
        s.push(format!("{text}\r\n{{}}\n{{\"x\":1}}").as_bytes());
        let got = all(&mut s);
        assert_eq!(
            got,
            vec![
                Ok(text.as_bytes().to_vec()),
                Ok(b"{}".to_vec()),
                Ok(br#"{"x":1}"#.to_vec())
            ]
        );
        assert!(!s.has_partial());
    }

    #[test]
    fn bytes_between_objects_that_start_none_are_reported_as_garbage_and_skipped() {
        let mut s = JsonSplitter::new(1024);
        s.push(b"hello\r\n{\"a\":1}");
        assert_eq!(
            all(&mut s),
            vec![Err(SplitError::Garbage(7)), Ok(br#"{"a":1}"#.to_vec())]
        );
    }

    #[test]
    fn an_object_longer_than_the_limit_is_an_error_and_the_buffer_is_dropped() {
        let mut s = JsonSplitter::new(16);
        s.push(br#"{"a":"0123456789abcdef"}"#);
        assert_eq!(s.next_object(), Err(SplitError::TooLong(16)));
        assert!(!s.has_partial());
        s.push(b"{}");
        assert_eq!(s.next_object(), Ok(Some(b"{}".to_vec())));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[{}\"\\\\ \t\n\r/a-z\u{e9}\u{1f600}]{0,12}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]
    }

    fn object() -> impl Strategy<Value = Value> {
        let value = leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z{}\"]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        });
        proptest::collection::btree_map("[a-z{}\"\\\\]{0,6}", value, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_pieces_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let mut s = JsonSplitter::new(256);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for to in cuts.into_iter().chain([bytes.len()]) {
                s.push(&bytes[from..to]);
                from = to;
                for o in all(&mut s).into_iter().flatten() {
                    let whole = o.len() <= 256 && o.first() == Some(&b'{') && o.last() == Some(&b'}');
                    prop_assert!(whole, "not one bounded object: {:?}", o);
                }
            }
        }

        #[test]
        fn objects_pretty_or_compact_come_out_whole_and_in_order_however_the_stream_is_cut(
            objects in proptest::collection::vec((object(), any::<bool>(), 0usize..4), 1..5),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut stream = Vec::new();
            for (v, pretty, sep) in &objects {
                let text = if *pretty { serde_json::to_string_pretty(v).unwrap() } else { v.to_string() };
                stream.extend_from_slice(text.as_bytes());
                stream.extend_from_slice(["", "\n", "\r\n", " \t"][*sep].as_bytes());
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = JsonSplitter::new(1 << 20);
            let mut got = Vec::new();
            let mut from = 0;
            for to in cuts.into_iter().chain([stream.len()]) {
                s.push(&stream[from..to]);
                from = to;
                for o in all(&mut s) {
                    let o = o.expect("valid objects are never garbage");
                    got.push(serde_json::from_slice::<Value>(&o).unwrap());
                }
            }
            let want: Vec<Value> = objects.into_iter().map(|(v, _, _)| v).collect();
            prop_assert_eq!(got, want);
            prop_assert!(!s.has_partial());
        }
    }
}
