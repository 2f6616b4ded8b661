//! Writing a tree as a document, indented as the vendors' own files are.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesPI, BytesStart, BytesText, Event};

use super::Element;

impl Element {
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
