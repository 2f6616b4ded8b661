//! The YAML examples of the protocol reference (`docs/protocols.md`) parse: a reader who copies
//! one gets a protocol cyclerd accepts.

use cyclerd_protocols::Plan;
use std::path::Path;

/// What a step-list excerpt is wrapped in to make a document.
const HEADER: &str = "protocol: docs example\nversion: 1\nparams:\n  capacity: 2.5 Ah\n";

/// Every ```yaml block of `markdown`, with the line its first row is on.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            None if line.trim_end() == "```yaml" => open = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

/// A whole document as it is; an excerpt of top-level keys (`steps:`, `record:` ...) under the
/// header; a bare step list under the header and `steps:`.
fn as_document(block: &str) -> String {
    let first = block.trim_start();
    if first.starts_with("protocol:") {
        block.to_owned()
    } else if first.starts_with('-') {
        format!("{HEADER}steps:\n{block}")
    } else {
        format!("{HEADER}{block}")
    }
}

#[test]
fn every_yaml_example_of_the_protocol_reference_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocols.md");
    let markdown = std::fs::read_to_string(&path).expect("docs/protocols.md is readable");
    let blocks = yaml_blocks(&markdown);
    assert!(
        blocks.len() >= 3,
        "expected the document, structured-step and macro examples in {}",
        path.display()
    );
    for (line, block) in blocks {
        let origin = format!("docs/protocols.md (the example from line {line})");
        Plan::from_yaml(&as_document(&block), &origin)
            .unwrap_or_else(|e| panic!("an example does not parse: {e}"));
    }
}

#[test]
fn an_example_that_does_not_parse_is_caught_with_its_line() {
    let markdown = "text\n```yaml\n  - cc: 1C\n    until: \"V >= 4.2 V\"\n```\n";
    let blocks = yaml_blocks(markdown);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, 3);
    let e = Plan::from_yaml(&as_document(&blocks[0].1), "x").unwrap_err();
    assert!(e.to_string().contains("direction"), "{e}");
}
