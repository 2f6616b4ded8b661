//! A small owned element tree over quick-xml, shared by the XML compilers (Maccor, Neware) and
//! their importers.
//!
//! Both formats are small documents read and written whole, so a tree is simpler to check than
//! a streaming walk, and one type serves both directions: what a compiler builds is exactly
//! what the importer sees.

use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesPI, BytesStart, BytesText, Event};

/// Deeper nesting than any schedule needs is refused before it costs stack (dropping a
/// pathologically deep tree recurses).
const MAX_DEPTH: usize = 32;

/// One XML element.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// Character content; `None` writes a self-closing tag when there are no children, while
    /// `Some("")` writes `<a></a>` (Maccor writes both forms and its reader expects them).
    pub text: Option<String>,
    pub children: Vec<Element>,
    /// Byte offset of the start tag in the source (0 for built elements), for error messages.
    pub offset: u64,
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_owned(),
            ..Element::default()
        }
    }

    /// An element holding only text.
    pub fn text(name: &str, text: impl Into<String>) -> Element {
        Element {
            text: Some(text.into()),
            ..Element::new(name)
        }
    }

    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.attrs.push((name.to_owned(), value.into()));
        self
    }

    pub fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child called `name`.
    pub fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text content, or "" when there is none.
    pub fn text_or_empty(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }

    /// Serialises the document: XML declaration, then `prolog` processing instructions, then
    /// this element as the root, indented by two spaces as the vendors' own files are.
    pub fn to_document(&self, prolog: &[&str]) -> String {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        // Writing into a Vec cannot fail: the only error source is the sink.
        let ok = "writing XML into memory cannot fail";
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .expect(ok);
        for pi in prolog {
            w.write_event(Event::PI(BytesPI::new(*pi))).expect(ok);
        }
        write_element(&mut w, self).expect(ok);
        let mut s =
            String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8 for str input");
        s.push('\n');
        s
    }
}

fn write_element(w: &mut Writer<Vec<u8>>, e: &Element) -> std::io::Result<()> {
    let mut start = BytesStart::new(e.name.as_str());
    for (k, v) in &e.attrs {
        start.push_attribute((k.as_str(), v.as_str()));
    }
    match (&e.text, e.children.is_empty()) {
        (None, true) => w.write_event(Event::Empty(start)),
        (Some(t), true) => {
            w.write_event(Event::Start(start))?;
            w.write_event(Event::Text(BytesText::new(t)))?;
            w.write_event(Event::End(BytesEnd::new(e.name.as_str())))
        }
        (_, false) => {
            w.write_event(Event::Start(start))?;
            for c in &e.children {
                write_element(w, c)?;
            }
            w.write_event(Event::End(BytesEnd::new(e.name.as_str())))
        }
    }
}

/// Why a text is not a well-formed XML document: where (a byte offset) and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct XmlError {
    pub location: String,
    pub message: String,
}

/// Parses a whole document into its root element; processing instructions, comments and the
/// declaration are skipped. Whitespace-only text between child elements is dropped, text of
/// leaf elements is kept verbatim (Maccor pads its fields and the padding is part of the
/// spelling).
pub(crate) fn parse(text: &str) -> Result<Element, XmlError> {
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
            Event::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(format!(
                        "elements nested deeper than {MAX_DEPTH} levels"
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
}
