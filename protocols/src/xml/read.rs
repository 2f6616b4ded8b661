//! Reading a document into a tree: one pass over quick-xml's events, with a depth limit and
//! errors that say where (a byte offset) and what.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::Element;

/// The default depth limit: deeper nesting than any schedule needs is refused before it costs
/// stack (dropping a pathologically deep tree recurses).
pub const MAX_DEPTH: usize = 32;

/// Why a text is not a well-formed XML document: where (a byte offset) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// `byte N`.
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for XmlError {}

/// Called for every streamed element instead of storing it in the tree; an `Err` message ends
/// the parse with the element's location.
pub type DataSink<'s> = &'s mut dyn FnMut(&BytesStart<'_>) -> Result<(), String>;

/// An element handed to a sink instead of stored: every `element` whose parent is called
/// `parent` and is open at `depth` (the root is at depth 1). Its content is skipped, so a page
/// of a thousand records costs no allocation per record.
pub struct Stream<'s> {
    pub depth: usize,
    pub parent: &'s str,
    pub element: &'s str,
    pub sink: DataSink<'s>,
}

/// How a document is read. [`Parser::default`] is what [`parse`] does.
pub struct Parser<'s> {
    /// Elements nested deeper than this are refused.
    pub max_depth: usize,
    /// Drops whitespace-only text before decoding it. Off by default: a leaf's text is kept
    /// verbatim (Maccor pads its fields and the padding is part of the spelling). On for
    /// messages whose texts are all trimmed, where the line breaks between a thousand elements
    /// would otherwise cost an allocation each.
    pub skip_blank_text: bool,
    /// The one element to stream, if any.
    pub stream: Option<Stream<'s>>,
}

impl Default for Parser<'_> {
    fn default() -> Self {
        Parser {
            max_depth: MAX_DEPTH,
            skip_blank_text: false,
            stream: None,
        }
    }
}

/// Parses a whole document into its root element; processing instructions, comments and the
/// declaration are skipped. Whitespace-only text between child elements is dropped, text of
/// leaf elements is kept verbatim.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    Parser::default().parse(text)
}

impl Parser<'_> {
    /// Parses a whole document into its root element, as [`parse`] does, with these options.
    pub fn parse(mut self, text: &str) -> Result<Element, XmlError> {
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let offset = reader.buffer_position();
            let fail = |message: String| XmlError {
                location: format!("byte {offset}"),
                message,
            };
            let event = reader
                .read_event()
                .map_err(|e| fail(format!("not well-formed XML: {e}")))?;
            match event {
                Event::Start(s) | Event::Empty(s) if root.is_some() => {
                    return Err(fail(format!(
                        "expected the end of the document, found another root element <{}>",
                        String::from_utf8_lossy(s.name().as_ref())
                    )));
                }
                Event::Start(s) if self.streamed(&s, &stack) => {
                    self.send(&s).map_err(fail)?;
                    reader
                        .read_to_end(s.name())
                        .map_err(|e| fail(format!("not well-formed XML: {e}")))?;
                }
                Event::Empty(s) if self.streamed(&s, &stack) => self.send(&s).map_err(fail)?,
                Event::Start(s) => {
                    if stack.len() >= self.max_depth {
                        return Err(fail(format!(
                            "elements nested deeper than {} levels",
                            self.max_depth
                        )));
                    }
                    stack.push(start_element(&s, offset).map_err(fail)?);
                }
                Event::Empty(s) => {
                    let e = start_element(&s, offset).map_err(fail)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(e),
                        None => root = Some(e),
                    }
                }
                Event::End(_) => {
                    // quick-xml has already checked that the end tag matches the open one.
                    let Some(mut e) = stack.pop() else {
                        return Err(fail("an end tag without a start tag".into()));
                    };
                    if e.children.is_empty() {
                        // `<a></a>` has (empty) text, unlike `<a/>`.
                        e.text.get_or_insert_with(String::new);
                    } else if e.text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                        e.text = None;
                    }
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(e),
                        None => root = Some(e),
                    }
                }
                // Skipped before decoding: CRLF decodes to a new string.
                Event::Text(t) if self.skip_blank_text && t.iter().all(u8::is_ascii_whitespace) => {
                }
                Event::Text(t) => {
                    let s = t
                        .xml_content()
                        .map_err(|e| fail(format!("undecodable text: {e}")))?;
                    push_text(&mut stack, &s, &fail)?;
                }
                Event::CData(t) => {
                    let s = t
                        .decode()
                        .map_err(|e| fail(format!("undecodable CDATA: {e}")))?;
                    push_text(&mut stack, &s, &fail)?;
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = r
                                .decode()
                                .map_err(|e| fail(format!("undecodable entity: {e}")))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| {
                                    fail(format!(
                                        "unknown entity &{name}; (expected &lt; &gt; &amp; &apos; &quot; or a character reference)"
                                    ))
                                })?
                                .to_owned()
                        }
                        Err(e) => return Err(fail(format!("bad character reference: {e}"))),
                    };
                    push_text(&mut stack, &resolved, &fail)?;
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
        }
        if let Some(open) = stack.last() {
            return Err(XmlError {
                location: format!("byte {}", open.offset),
                message: format!("<{}> is never closed", open.name),
            });
        }
        root.ok_or_else(|| XmlError {
            location: "byte 0".into(),
            message: "expected an XML document, found no element".into(),
        })
    }

    /// Whether `s`, opening inside `stack`, is the streamed element.
    fn streamed(&self, s: &BytesStart<'_>, stack: &[Element]) -> bool {
        self.stream.as_ref().is_some_and(|st| {
            stack.len() == st.depth
                && stack.last().is_some_and(|p| p.name == st.parent)
                && s.name().as_ref() == st.element.as_bytes()
        })
    }

    fn send(&mut self, s: &BytesStart<'_>) -> Result<(), String> {
        match self.stream.as_mut() {
            Some(st) => (st.sink)(s),
            None => Ok(()),
        }
    }
}

fn start_element(s: &BytesStart<'_>, offset: u64) -> Result<Element, String> {
    let name = std::str::from_utf8(s.name().as_ref())
        .map_err(|_| "an element name that is not UTF-8".to_owned())?
        .to_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| format!("bad attribute in <{name}>: {e}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|e| format!("bad value of attribute {key} in <{name}>: {e}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        offset,
        ..Element::default()
    })
}

fn push_text(
    stack: &mut [Element],
    s: &str,
    fail: &dyn Fn(String) -> XmlError,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(e) => {
            e.text.get_or_insert_with(String::new).push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(fail(
            "expected an element, found text outside the root".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_tree_reads_back_equal() {
        let tree = Element::new("a")
            .attr("k", "1 < 2 & \"q\"")
            .child(Element::text("b", "  x >= y  "))
            .child(Element::text("c", ""))
            .child(Element::new("d"));
        let doc = tree.to_document(&["pi-target x=\"1\""]);
        let back = parse(&doc).unwrap();
        let strip = |mut e: Element| {
            e.offset = 0;
            e.children.iter_mut().for_each(|c| c.offset = 0);
            e
        };
        assert_eq!(strip(back), tree);
    }

    #[test]
    fn unclosed_and_mismatched_elements_are_errors_with_a_location() {
        for bad in ["<a><b></a>", "<a>", "", "text", "<a/><b/>", "<a>&nope;</a>"] {
            let e = parse(bad).unwrap_err();
            assert!(e.location.starts_with("byte "), "{bad}: {e:?}");
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn a_streamed_element_goes_to_the_sink_and_blank_text_can_be_skipped() {
        let mut seen = Vec::new();
        let mut sink = |s: &BytesStart<'_>| -> Result<(), String> {
            seen.push(String::from_utf8_lossy(s.name().as_ref()).into_owned());
            Ok(())
        };
        let parser = Parser {
            max_depth: 8,
            skip_blank_text: true,
            stream: Some(Stream {
                depth: 2,
                parent: "list",
                element: "data",
                sink: &mut sink,
            }),
        };
        let doc =
            "<r>\r\n<list>\r\n<data a=\"1\"/>\r\n<data>x</data>\r\n<other/></list><data/></r>";
        let root = parser.parse(doc).unwrap();
        assert_eq!(seen, ["data", "data"]);
        let list = root.find("list").unwrap();
        assert_eq!(list.children.len(), 1, "{list:?}");
        assert_eq!(list.text, None);
        assert!(
            root.find("data").is_some(),
            "only data in the list is streamed"
        );
    }
}
