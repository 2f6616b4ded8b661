//! The start form: what it holds, and the start it makes, checked as `cyclerctl start` checks
//! it (the protocol's size, the metadata file's format, `NAME=VALUE` parameters) and then by
//! the daemon's own [`Daemon::start_test_with`] (primary metadata, the lab's schemas, the
//! protocol), so the form refuses exactly what the command line refuses.

use crate::daemon::{Daemon, Started};
use axum::extract::Multipart;
use std::collections::{BTreeMap, HashMap};

/// The standard protocol library (`deploy/protocols/`), offered on the form.
pub const LIBRARY: &[(&str, &str)] = &[
    (
        "capacity-check.yaml",
        include_str!("../../../deploy/protocols/capacity-check.yaml"),
    ),
    (
        "cccv-3-cycles.yaml",
        include_str!("../../../deploy/protocols/cccv-3-cycles.yaml"),
    ),
    (
        "cycle-life-1c.yaml",
        include_str!("../../../deploy/protocols/cycle-life-1c.yaml"),
    ),
    (
        "demo.yaml",
        include_str!("../../../deploy/protocols/demo.yaml"),
    ),
    (
        "demo-charge.yaml",
        include_str!("../../../deploy/protocols/demo-charge.yaml"),
    ),
    (
        "formation.yaml",
        include_str!("../../../deploy/protocols/formation.yaml"),
    ),
    (
        "gitt.yaml",
        include_str!("../../../deploy/protocols/gitt.yaml"),
    ),
    (
        "hppc.yaml",
        include_str!("../../../deploy/protocols/hppc.yaml"),
    ),
    (
        "rate-capability.yaml",
        include_str!("../../../deploy/protocols/rate-capability.yaml"),
    ),
    (
        "rpt.yaml",
        include_str!("../../../deploy/protocols/rpt.yaml"),
    ),
    (
        "chamber-25-45-25.yaml",
        include_str!("../../../deploy/protocols/chamber-25-45-25.yaml"),
    ),
];

/// What the start form holds (shown again with the error after a refused start).
#[derive(Debug, Clone, Default)]
pub struct StartForm {
    /// The library protocol chosen; empty when a file is uploaded.
    pub protocol: String,
    /// The uploaded file's name and text, if one was given.
    pub upload: Option<(String, String)>,
    /// Primary metadata, one field each.
    pub cell_id: String,
    pub operator: String,
    pub owner: String,
    pub objective: String,
    pub chemistry: String,
    pub nominal_capacity_ah: String,
    /// Optional primary metadata.
    pub team: String,
    /// Further metadata in the metadata file's format (`[secondary]`, `[tertiary]` tables).
    pub more_metadata: String,
    /// Parameters, one `NAME=VALUE` per line.
    pub params: String,
}

/// Largest form field read, in bytes (a protocol file is far smaller).
const MAX_FIELD: usize = 1 << 20;

impl StartForm {
    /// Reads the multipart form; an unreadable form is an error to show.
    pub async fn read(mut multipart: Multipart) -> Result<StartForm, String> {
        let mut form = StartForm::default();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("the form could not be read: {e}"))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let bytes = field
                .bytes()
                .await
                .map_err(|e| format!("the form could not be read: {e}"))?;
            if bytes.len() > MAX_FIELD {
                return Err(format!("{name} is larger than {MAX_FIELD} bytes"));
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| format!("{name} is not UTF-8 text"))?;
            let slot = match name.as_str() {
                "protocol" => &mut form.protocol,
                "protocol_file" => {
                    if !text.trim().is_empty() {
                        form.upload = Some((file_name.unwrap_or_else(|| "upload".into()), text));
                    }
                    continue;
                }
                "cell_id" => &mut form.cell_id,
                "operator" => &mut form.operator,
                "owner" => &mut form.owner,
                "objective" => &mut form.objective,
                "chemistry" => &mut form.chemistry,
                "nominal_capacity_ah" => &mut form.nominal_capacity_ah,
                "team" => &mut form.team,
                "more_metadata" => &mut form.more_metadata,
                "params" => &mut form.params,
                _ => continue,
            };
            *slot = text;
        }
        Ok(form)
    }

    /// The protocol's text and its origin (for messages): the uploaded file if given, else
    /// the library's.
    fn protocol(&self) -> Result<(String, String), String> {
        if let Some((name, text)) = &self.upload {
            return Ok((text.clone(), name.clone()));
        }
        if self.protocol.is_empty() {
            return Err("choose a protocol from the library or upload a protocol file".into());
        }
        LIBRARY
            .iter()
            .find(|(name, _)| *name == self.protocol)
            .map(|(name, text)| (text.to_string(), format!("deploy/protocols/{name}")))
            .ok_or_else(|| format!("{:?} is not in the protocol library", self.protocol))
    }

    /// The metadata, as `cyclerctl start --meta-file F --meta K=V…` builds it: the file's
    /// format first, the fields over it (blank fields left out, so the daemon names them as
    /// missing).
    fn metadata(&self) -> Result<HashMap<String, String>, String> {
        let mut metadata = if self.more_metadata.trim().is_empty() {
            HashMap::new()
        } else {
            crate::metadata::from_toml(&self.more_metadata, "more metadata")?
        };
        for (key, value) in [
            ("cell_id", &self.cell_id),
            ("operator", &self.operator),
            ("owner", &self.owner),
            ("objective", &self.objective),
            ("chemistry", &self.chemistry),
            ("nominal_capacity_ah", &self.nominal_capacity_ah),
            ("team", &self.team),
        ] {
            if !value.trim().is_empty() {
                metadata.insert(key.into(), value.trim().into());
            }
        }
        Ok(metadata)
    }

    /// The parameters, one `NAME=VALUE` a line, as `--param` takes them.
    fn params(&self) -> Result<BTreeMap<String, String>, String> {
        self.params
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                line.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("parameters: {line:?} is not NAME=VALUE"))
            })
            .collect()
    }

    /// Starts the test on `channel`, or says why not.
    pub async fn start(&self, daemon: &Daemon, channel: &str) -> Result<Started, String> {
        let (protocol, origin) = self.protocol()?;
        cyclerd_protocols::check_size(&protocol, &origin).map_err(|e| e.to_string())?;
        let metadata = self.metadata()?;
        let params = self.params()?;
        daemon
            .start_test_with(channel, &protocol, &origin, metadata, &params)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_protocol_parses() {
        for (name, text) in LIBRARY {
            cyclerd_protocols::Plan::from_yaml(text, name).unwrap();
        }
    }

    #[test]
    fn fields_override_the_metadata_file_and_blank_ones_are_left_out() {
        let form = StartForm {
            cell_id: " c1 ".into(),
            more_metadata: "cell_id = \"x\"\n[secondary]\nmaker = \"ACME\"\n".into(),
            ..StartForm::default()
        };
        let m = form.metadata().unwrap();
        assert_eq!(m["cell_id"], "c1");
        assert_eq!(m["secondary.maker"], "ACME");
        assert!(!m.contains_key("operator"));
    }

    #[test]
    fn parameters_are_name_value_lines() {
        let form = StartForm {
            params: "v_max = 4.1V\n\ncapacity=2Ah".into(),
            ..StartForm::default()
        };
        assert_eq!(form.params().unwrap()["v_max"], "4.1V");
        let bad = StartForm {
            params: "v_max".into(),
            ..StartForm::default()
        };
        assert!(bad.params().is_err());
    }

    #[test]
    fn no_protocol_is_an_error_that_says_what_to_do() {
        let e = StartForm::default().protocol().unwrap_err();
        assert!(e.contains("library"), "{e}");
    }
}
