//! A small owned XML element tree over quick-xml: the one tree of the workspace, shared by the
//! XML compilers (Maccor, Neware step files), their importers and the Neware BTS API wire codec.
//!
//! Every user reads and writes small documents whole, so a tree is simpler to check than a
//! streaming walk, and one type serves both directions: what a compiler builds is exactly what
//! the importer sees. The one large message (a Neware `download` page) streams its repeated
//! element through [`Parser::stream`] instead of storing it.
//!
//! - [`read`]: [`parse`] and the [`Parser`] options (depth limit, blank text, streaming).
//! - `write` (private): [`Element::to_document`].

pub mod read;
mod write;

pub use read::{DataSink, Parser, Stream, XmlError, parse};

/// One XML element.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Element {
    pub name: String,
    /// Attribute names and unescaped values, in document order.
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
}
