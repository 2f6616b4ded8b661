//! The request check: what `cyclerhub token issue` hands out (see [`crate::token`]) is checked
//! here on every upload and, when the hub requires tokens, on every query.
//!
//! Each token belongs to a lab and has a [`Role`]: a daemon token uploads (the first daemon that
//! uploads with it is bound to that lab, and may then only write with tokens of its own lab: its
//! tests are its lab's tests) and reads its lab's tests; a reader token (an analyst's, a data
//! manager's) only reads them. [`Authenticator`] is the one check both gRPC services run, against
//! the tokens in the [`HubStore`].

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::store::{HubStore, error_chain};
// The token's own code has its own module; its public paths stay here too.
pub use crate::token::{Role, TokenRow, check_name, generate, parse, secret_hash, secret_matches};

/// Who sent a request, as a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The token's lab: the only lab whose tests the caller may read (or write).
    pub lab: String,
    /// The token's name, to say which token a refusal is about.
    pub name: String,
    /// Whether the caller may upload.
    pub role: Role,
}

/// The bearer-token check that the ingest and the query service share.
#[derive(Clone)]
pub struct Authenticator {
    /// Where the tokens are.
    store: HubStore,
    /// Every request needs a valid token; off for a hub only its own lab PC talks to.
    required: bool,
}

impl Authenticator {
    /// Checks tokens in `store`; with `required` false every request is let through.
    pub fn new(store: HubStore, required: bool) -> Authenticator {
        Authenticator { store, required }
    }

    /// The caller a request's `authorization: Bearer <token>` names: `None` when the hub does
    /// not require tokens (anyone may do anything), `UNAUTHENTICATED`, saying what to do, when
    /// it does and the token is missing, unknown, wrong or revoked.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<Option<Caller>, Status> {
        if !self.required {
            return Ok(None);
        }
        self.presented(metadata).await?.map(Some).ok_or_else(|| {
            Status::unauthenticated(
                "this hub requires a token: issue one with `cyclerhub token issue --lab LAB \
                 --name NAME` (add --reader for read-only access) and give a daemon its file \
                 as hub.token_file, or `cyclerhub tests|samples` as --token-file",
            )
        })
    }

    /// The caller of the token a request presents, whether or not the hub requires tokens
    /// (on a hub that does not, a token still says whose lab a daemon is); `None` without one,
    /// `UNAUTHENTICATED` for a token that is not valid.
    pub async fn presented(&self, metadata: &MetadataMap) -> Result<Option<Caller>, Status> {
        let Some(presented) = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        let store = self.store.clone();
        let token = tokio::task::spawn_blocking(move || store.authenticate(&presented))
            .await
            .map_err(|e| Status::internal(format!("hub storage task failed: {e}")))?
            .map_err(|e| Status::internal(format!("hub storage failed: {}", error_chain(&e))))?
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the token is not valid for this hub (mistyped, or issued by another hub)",
                )
            })?;
        if token.revoked_unix_s.is_some() {
            return Err(Status::unauthenticated(format!(
                "the token {:?} (lab {:?}) was revoked; issue a new one",
                token.name, token.lab
            )));
        }
        Ok(Some(Caller {
            lab: token.lab,
            name: token.name,
            role: token.role,
        }))
    }
}

/// A long-lived stream's token, checked again once `every` has passed since it was last found
/// valid: revoking it ends streams already open (a daemon's upload, an operator's tail).
pub struct Recheck {
    /// The hub's token check.
    auth: Authenticator,
    /// The stream's request headers (its `authorization`).
    metadata: MetadataMap,
    /// When it was last found valid.
    at: tokio::time::Instant,
    /// How long that holds.
    every: std::time::Duration,
}

impl Recheck {
    /// For a stream whose token `auth` just accepted.
    pub fn new(auth: Authenticator, metadata: MetadataMap, every: std::time::Duration) -> Recheck {
        Recheck {
            auth,
            metadata,
            at: tokio::time::Instant::now(),
            every,
        }
    }

    /// Completes when the next check is due, so that an idle stream checks too; never with a
    /// zero `every` (then every use checks).
    pub async fn due(&self) {
        if self.every.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.at + self.every).await;
    }

    /// `UNAUTHENTICATED` (saying why) when the token is no longer valid; checks the store only
    /// once `every` has passed.
    pub async fn still_valid(&mut self) -> Result<(), Status> {
        if self.at.elapsed() >= self.every {
            self.auth.caller(&self.metadata).await?;
            self.at = tokio::time::Instant::now();
        }
        Ok(())
    }
}
