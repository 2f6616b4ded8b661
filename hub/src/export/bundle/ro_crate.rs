//! `ro-crate-metadata.json`: the RO-Crate 1.1 description (JSON-LD) of a published bundle, which
//! archives (Zenodo, institutional repositories, WorkflowHub) and `rocrate` tools read.
//!
//! One flat `@graph`: the metadata descriptor; the root dataset `./` (name, description,
//! datePublished, license, creator, publisher, `hasPart` of every file, `mentions` of every
//! test); the license; the people and organisation; a `File` per file (encodingFormat,
//! contentSize, sha256, `about` its test); and per test a `CreateAction` (the test made the
//! files: its `result`), with its instruments and its properties as `PropertyValue`s (cell,
//! chemistry, nominal capacity, protocol, ...). Only terms of RO-Crate's context are used, so
//! the plain URL context suffices.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// RO-Crate 1.1's JSON-LD context.
pub const CONTEXT: &str = "https://w3id.org/ro/crate/1.1/context";
/// The specification a crate conforms to.
const CONFORMS_TO: &str = "https://w3id.org/ro/crate/1.1";

/// A person or an organisation credited in the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Their name.
    pub name: String,
    /// A URL identifying them (an ORCID, a ROR id, a home page), when given; else the entity
    /// gets a local id from the name.
    pub url: Option<String>,
}

impl Agent {
    /// `Name` or `Name <URL>` (as git writes authors).
    pub fn parse(text: &str) -> Result<Agent, String> {
        let text = text.trim();
        let (name, url) = match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
            Some((name, url)) => (name.trim(), Some(url.trim())),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(format!(
                "{text:?} names nobody: give NAME or \"NAME <URL>\""
            ));
        }
        if let Some(url) = url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "{url:?} is not a URL: give \"NAME <https://orcid.org/...>\" or just NAME"
            ));
        }
        Ok(Agent {
            name: name.to_owned(),
            url: url.map(str::to_owned),
        })
    }

    fn id(&self, kind: &str) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("#{kind}-{}", slug(&self.name)))
    }
}

/// The license of the data: a URL (SPDX's, for a license SPDX lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    /// The license's URL, its entity's `@id`.
    pub url: String,
    /// Its SPDX identifier, when given as one (`CC-BY-4.0`).
    pub spdx: Option<String>,
}

impl License {
    /// A URL as given, or an SPDX identifier (`CC-BY-4.0`), whose URL is SPDX's page of it.
    pub fn parse(text: &str) -> Result<License, String> {
        let text = text.trim();
        if text.starts_with("https://") || text.starts_with("http://") {
            let spdx = text
                .strip_prefix("https://spdx.org/licenses/")
                .map(|id| id.trim_end_matches(".html").to_owned());
            return Ok(License {
                url: text.to_owned(),
                spdx,
            });
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+');
        if text.is_empty() || !text.chars().all(valid) {
            return Err(format!(
                "{text:?} is neither a URL nor an SPDX license id: give e.g. CC-BY-4.0 or \
                 https://spdx.org/licenses/CC-BY-4.0"
            ));
        }
        Ok(License {
            url: format!("https://spdx.org/licenses/{text}"),
            spdx: Some(text.to_owned()),
        })
    }
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntity {
    /// Its path in the bundle, `/`-separated: the entity's `@id`.
    pub path: String,
    /// What the file is, in words.
    pub description: String,
    /// Its media type (`text/csv`, `application/vnd.apache.parquet`, ...).
    pub encoding_format: &'static str,
    /// The specification its content follows (BDF's), when there is one.
    pub conforms_to: Option<&'static str>,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lowercase hex: an archive checks the upload against it.
    pub sha256: String,
    /// The `@id` of the test it is data of; `None` for the bundle's own README.
    pub about: Option<String>,
}

/// A property of a test, written as a `PropertyValue`.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// Its name (`chemistry`, `nominal_capacity`, `grade`, ...).
    pub name: String,
    /// Its value: text or a number.
    pub value: Value,
    /// The unit of a number (`Ah`), when it has one.
    pub unit: Option<String>,
}

impl Property {
    /// A property `name` with `value` and no unit.
    pub fn new(name: &str, value: impl Into<Value>) -> Property {
        Property {
            name: name.to_owned(),
            value: value.into(),
            unit: None,
        }
    }
}

/// An instrument a test ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    /// Its name in the daemon's configuration.
    pub name: String,
    /// Its device family (`ea-psb`, `neware`, ...).
    pub family: String,
    /// `cycler`, `source`, `load` or `chamber`.
    pub role: String,
}

impl Instrument {
    fn id(&self) -> String {
        format!("#instrument-{}-{}", slug(&self.name), slug(&self.family))
    }
}

/// One test: a `CreateAction` whose results are its files.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEntity {
    /// The entity's `@id` (`#test-...`), which its files' `about` name.
    pub id: String,
    /// The test's id, or its pseudonym in an anonymised bundle.
    pub identifier: String,
    /// A title for people.
    pub name: String,
    /// What the test was for (its objective), when known.
    pub description: Option<String>,
    /// When it started, RFC 3339.
    pub start: Option<String>,
    /// When it ended, RFC 3339; `None` while it runs.
    pub end: Option<String>,
    /// `finished`, `stopped`, `faulted`; `None` while it runs.
    pub outcome: Option<String>,
    /// The instruments it ran on.
    pub instruments: Vec<Instrument>,
    /// Its properties: the cell, chemistry, nominal capacity, protocol, ..., then any the
    /// caller adds (the extension point for per-test results such as a grade).
    pub properties: Vec<Property>,
}

/// What the crate says about the bundle as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct About {
    /// The dataset's title.
    pub name: String,
    /// What it holds, in words.
    pub description: String,
    /// When it is published: an ISO 8601 date.
    pub date_published: String,
    /// The data's license.
    pub license: License,
    /// Who made the data (people).
    pub creators: Vec<Agent>,
    /// Who publishes it (an organisation), when given.
    pub publisher: Option<Agent>,
}

/// The crate's JSON-LD, pretty-printed and newline-terminated.
pub fn crate_json(about: &About, tests: &[TestEntity], files: &[FileEntity]) -> String {
    let refs = |ids: &mut dyn Iterator<Item = String>| -> Value {
        ids.map(|id| json!({ "@id": id })).collect()
    };
    let mut graph = vec![
        json!({
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "conformsTo": { "@id": CONFORMS_TO },
            "about": { "@id": "./" },
        }),
        {
            let mut root = json!({
                "@id": "./",
                "@type": "Dataset",
                "name": about.name,
                "description": about.description,
                "datePublished": about.date_published,
                "license": { "@id": about.license.url },
                "hasPart": refs(&mut files.iter().map(|f| f.path.clone())),
                "mentions": refs(&mut tests.iter().map(|t| t.id.clone())),
            });
            if !about.creators.is_empty() {
                root["creator"] = refs(&mut about.creators.iter().map(|c| c.id("person")));
            }
            if let Some(p) = &about.publisher {
                root["publisher"] = json!({ "@id": p.id("organization") });
            }
            root
        },
        {
            let mut license = json!({
                "@id": about.license.url,
                "@type": "CreativeWork",
                "name": about.license.spdx.as_deref().unwrap_or(&about.license.url),
            });
            if let Some(spdx) = &about.license.spdx {
                license["identifier"] = json!(spdx);
            }
            license
        },
    ];
    let agent = |a: &Agent, kind: &str, ty: &str| {
        let mut e = json!({ "@id": a.id(kind), "@type": ty, "name": a.name });
        if let Some(url) = &a.url {
            e["url"] = json!(url);
        }
        e
    };
    let mut people = BTreeSet::new();
    for c in &about.creators {
        if people.insert(c.id("person")) {
            graph.push(agent(c, "person", "Person"));
        }
    }
    if let Some(p) = &about.publisher
        && !people.contains(&p.id("organization"))
    {
        graph.push(agent(p, "organization", "Organization"));
    }
    for f in files {
        let mut e = json!({
            "@id": f.path,
            "@type": "File",
            "name": f.path,
            "description": f.description,
            "encodingFormat": f.encoding_format,
            "contentSize": f.size.to_string(),
            "sha256": f.sha256,
        });
        if let Some(spec) = f.conforms_to {
            e["conformsTo"] = json!({ "@id": spec });
        }
        if let Some(about) = &f.about {
            e["about"] = json!({ "@id": about });
        }
        graph.push(e);
    }
    let mut instruments = BTreeSet::new();
    for t in tests {
        graph.push(test_entity(t, files));
        for i in &t.instruments {
            if instruments.insert(i.id()) {
                graph.push(json!({
                    "@id": i.id(),
                    "@type": "IndividualProduct",
                    "name": i.name,
                    "category": i.role,
                    "model": i.family,
                }));
            }
        }
        for p in &t.properties {
            let mut e = json!({
                "@id": property_id(t, p),
                "@type": "PropertyValue",
                "name": p.name,
                "value": p.value,
            });
            if let Some(unit) = &p.unit {
                e["unitText"] = json!(unit);
            }
            graph.push(e);
        }
    }
    let document = json!({ "@context": CONTEXT, "@graph": graph });
    let mut text =
        serde_json::to_string_pretty(&document).expect("strings, numbers and maps serialise");
    text.push('\n');
    text
}

/// A test's `CreateAction`; its results are the files `about` it.
fn test_entity(t: &TestEntity, files: &[FileEntity]) -> Value {
    let results = files
        .iter()
        .filter(|f| f.about.as_deref() == Some(t.id.as_str()))
        .map(|f| json!({ "@id": f.path }))
        .collect::<Vec<_>>();
    let mut e = json!({
        "@id": t.id,
        "@type": "CreateAction",
        "name": t.name,
        "identifier": t.identifier,
        "instrument": t.instruments.iter().map(|i| json!({ "@id": i.id() })).collect::<Vec<_>>(),
        "result": results,
        "additionalProperty": t
            .properties
            .iter()
            .map(|p| json!({ "@id": property_id(t, p) }))
            .collect::<Vec<_>>(),
    });
    if let Some(d) = &t.description {
        e["description"] = json!(d);
    }
    if let Some(s) = &t.start {
        e["startTime"] = json!(s);
    }
    if let Some(end) = &t.end {
        e["endTime"] = json!(end);
    }
    // schema.org's ActionStatusType: a stopped test completed what it did; a faulted one failed.
    let status = match t.outcome.as_deref() {
        None => "ActiveActionStatus",
        Some("faulted") => "FailedActionStatus",
        Some(_) => "CompletedActionStatus",
    };
    e["actionStatus"] = json!({ "@id": format!("http://schema.org/{status}") });
    e
}

fn property_id(t: &TestEntity, p: &Property) -> String {
    format!("{}/{}", t.id, slug(&p.name))
}

/// Letters, digits, `-` and `_` kept, anything else `-`: a fragment that needs no escaping.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_a_name_with_an_optional_url_in_angle_brackets() {
        let a = Agent::parse("Ada Lovelace <https://orcid.org/0000-0002-1825-0097>").unwrap();
        assert_eq!(a.name, "Ada Lovelace");
        assert_eq!(
            a.url.as_deref(),
            Some("https://orcid.org/0000-0002-1825-0097")
        );
        assert_eq!(Agent::parse(" Cell Lab ").unwrap().url, None);
        assert!(
            Agent::parse("Ada <orcid>")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(Agent::parse("  ").is_err());
    }

    #[test]
    fn a_license_is_a_url_or_an_spdx_id_that_becomes_spdx_s_url() {
        let l = License::parse("CC-BY-4.0").unwrap();
        assert_eq!(l.url, "https://spdx.org/licenses/CC-BY-4.0");
        assert_eq!(l.spdx.as_deref(), Some("CC-BY-4.0"));
        let l = License::parse("https://spdx.org/licenses/CC0-1.0.html").unwrap();
        assert_eq!(l.spdx.as_deref(), Some("CC0-1.0"));
        let l = License::parse("https://example.org/our-terms").unwrap();
        assert_eq!(l.spdx, None);
        assert!(License::parse("CC BY 4.0").is_err());
        assert!(License::parse("").is_err());
    }
}
