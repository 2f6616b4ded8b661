//! The lab's metadata schemas: the JSON Schemas a lab registers in its hub (`cyclerhub schema
//! set`) for the secondary and tertiary metadata of its tests. A test's metadata is checked
//! against them before the test starts, so a wrong value is fixed by the operator at the bench
//! rather than found later by a data manager.
//!
//! They are asked of the hub at every start, so a schema the lab just registered applies at
//! once, and kept in the outbox's settings, so a daemon whose hub is unreachable (or restarted
//! while it was) still checks against the last copy it had and says how old it is. A daemon
//! that never reached its hub starts tests unchecked; the hub, which knows the daemon's lab from
//! its token or its `hub.lab`, then records with the test what does not fit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cyclerd_proto::metadata;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic::transport::Channel;

use crate::channel::StartError;
use crate::outbox::Outbox;
use crate::proto::hub::GetMetadataSchemasRequest;
use crate::proto::hub::query_client::QueryClient;

/// How long a start waits for the hub's answer before using the kept copy.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// The outbox setting holding the last copy.
const META_KEY: &str = "metadata_schemas";

/// The lab's schemas as last received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Copy {
    /// Who asked (`hub.lab`, or the token's public id): a copy asked under another
    /// configuration may be another lab's, and is not used.
    asked_as: String,
    /// The lab they belong to, as the hub named it.
    lab: String,
    /// When the hub sent them (Unix seconds), to say how old a kept copy is.
    fetched_unix_s: f64,
    /// `(tier, JSON Schema document)`; a tier without one accepts anything.
    schemas: Vec<(String, String)>,
}

/// Where the schemas come from; see the module documentation.
pub struct LabSchemas {
    /// The hub's query service and how to ask it; `None` when the daemon cannot name its lab
    /// (neither a token nor `hub.lab`): nothing to check against.
    hub: Option<HubQuery>,
    /// Keeps the last copy across restarts.
    outbox: Outbox,
    /// The last copy received (or kept from an earlier run).
    last: Mutex<Option<Copy>>,
}

/// How to ask the hub for the lab's schemas.
struct HubQuery {
    /// Connected on first use, reconnected by tonic after a failure.
    channel: Channel,
    /// `hub.lab`; empty = the lab of the token.
    lab: String,
    /// The daemon's hub token, sent as a bearer token.
    token: Option<String>,
}

impl LabSchemas {
    /// `channel`: a lazily connecting channel to the hub. Loads the copy kept by an earlier
    /// run, if any.
    pub fn new(
        channel: Channel,
        lab: Option<String>,
        token: Option<String>,
        outbox: Outbox,
    ) -> LabSchemas {
        let hub = (lab.is_some() || token.is_some()).then(|| HubQuery {
            channel,
            lab: lab.unwrap_or_default(),
            token,
        });
        let last = outbox
            .reader()
            .and_then(|r| r.meta(META_KEY))
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_str::<Copy>(&json).ok())
            .filter(|copy| hub.as_ref().is_some_and(|h| h.asked_as() == copy.asked_as));
        LabSchemas {
            hub,
            outbox,
            last: Mutex::new(last),
        }
    }

    /// Checks the tiers of `metadata` against the lab's schemas; the error lists every
    /// problem and names the lab and, for a kept copy, its age.
    pub async fn check(&self, metadata: &HashMap<String, String>) -> Result<(), StartError> {
        let Some((copy, kept)) = self.current().await else {
            return Ok(());
        };
        let checked = metadata::check(&copy.schemas, metadata);
        for e in &checked.unusable {
            // The hub compiled it when it was registered; a feature this build does not know
            // must not block the lab's tests (the hub records what it finds).
            tracing::warn!(lab = copy.lab, "skipping a metadata schema: {e}");
        }
        let problems = checked.problems;
        if problems.is_empty() {
            return Ok(());
        }
        let source = if kept {
            format!(
                " (the copy received {:.0} s ago: the hub could not be asked)",
                (unix_now() - copy.fetched_unix_s).max(0.0)
            )
        } else {
            String::new()
        };
        Err(StartError::Metadata(format!(
            "the metadata does not follow lab {:?}'s schemas{source}: {}",
            copy.lab,
            problems.join("; ")
        )))
    }

    /// The schemas from the hub, or the kept copy (`true`) when it cannot answer.
    async fn current(&self) -> Option<(Copy, bool)> {
        let hub = self.hub.as_ref()?;
        match tokio::time::timeout(FETCH_TIMEOUT, hub.fetch()).await {
            Ok(Ok(copy)) => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                // Kept with its time at every start (one small write), so a kept copy's age
                // is the age of the last answer. Lost only if the store is gone, and then the
                // next start fetches again.
                if let Ok(json) = serde_json::to_string(&copy) {
                    let _ = self.outbox.set_meta(META_KEY, json);
                }
                *last = Some(copy.clone());
                Some((copy, false))
            }
            failed => {
                let why = match failed {
                    Ok(Err(status))
                        if matches!(
                            status.code(),
                            Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument
                        ) =>
                    {
                        format!(
                            "it refused: {}; check hub.lab and hub.token_file",
                            status.message()
                        )
                    }
                    Ok(Err(status)) => format!("{}: {}", status.code(), status.message()),
                    _ => format!("no answer within {} s", FETCH_TIMEOUT.as_secs()),
                };
                let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match &last {
                    Some(_) => tracing::warn!(
                        "cannot fetch the lab's metadata schemas from the hub ({why}); checking \
                         against the copy kept from earlier"
                    ),
                    None => tracing::warn!(
                        "cannot fetch the lab's metadata schemas from the hub ({why}) and none \
                         was kept: the test's metadata is not checked against them"
                    ),
                }
                last.map(|copy| (copy, true))
            }
        }
    }
}

impl HubQuery {
    /// Who asks: the configured lab, else the token's public id (never its secret).
    fn asked_as(&self) -> String {
        match &self.token {
            _ if !self.lab.is_empty() => format!("lab {}", self.lab),
            Some(token) => format!("token {}", token.split('_').nth(1).unwrap_or_default()),
            None => String::new(),
        }
    }

    async fn fetch(&self) -> Result<Copy, tonic::Status> {
        let mut request = tonic::Request::new(GetMetadataSchemasRequest {
            lab: self.lab.clone(),
        });
        if let Some(token) = &self.token {
            let value = crate::proto::bearer(token).ok_or_else(|| {
                tonic::Status::invalid_argument("the hub token is not header text")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let answer = QueryClient::new(self.channel.clone())
            .get_metadata_schemas(request)
            .await?
            .into_inner();
        Ok(Copy {
            asked_as: self.asked_as(),
            lab: answer.lab,
            fetched_unix_s: unix_now(),
            schemas: answer
                .schemas
                .into_iter()
                .map(|s| (s.tier, s.schema_json))
                .collect(),
        })
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
