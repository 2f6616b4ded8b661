//! Tokens: what `cyclerhub token issue` hands out and the hub checks on every upload and, when
//! it requires tokens, on every query.
//!
//! A token is `cyh_<id>_<secret>`: the 12-hex-digit id finds the token's row, the 64-hex-digit
//! secret (256 random bits) proves it. The hub keeps only the SHA-256 of the secret, so a copy
//! of the database lets nobody in; a high-entropy secret needs no slow hash. Each token belongs
//! to a lab and has a [`Role`]: a daemon token uploads (the first daemon that uploads with it is
//! bound to that lab, and may then only write with tokens of its own lab: its tests are its
//! lab's tests) and reads its lab's tests; a reader token (an analyst's, a data manager's) only
//! reads them. [`Authenticator`] is the one check both gRPC services run.

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::store::{HubStore, error_chain};

/// What a token allows, besides reading its lab's tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A daemon's: uploads its tests, and reads its lab's.
    Daemon,
    /// Read-only, for people and tools that look at the lab's data.
    Reader,
}

impl Role {
    /// The name stored in the database and shown by `cyclerhub token list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::Reader => "reader",
        }
    }

    /// The role a stored name means. The schema allows only the two names; anything else
    /// gets the lesser role, so a damaged row never grants uploads.
    pub fn from_stored(name: &str) -> Role {
        if name == "daemon" {
            Role::Daemon
        } else {
            Role::Reader
        }
    }
}

/// One issued token as the hub keeps it (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Public part of the token, to find it and to name it in logs.
    pub token_id: String,
    /// The lab whose tests it may read, and whose daemons may upload with it (daemon role).
    pub lab: String,
    /// Unique name given at issue (the daemon's, or the person's), to revoke it by.
    pub name: String,
    /// When it was issued (Unix seconds).
    pub created_unix_s: f64,
    /// When it was revoked (Unix seconds); `None` while valid.
    pub revoked_unix_s: Option<f64>,
    /// What it allows besides reading.
    pub role: Role,
}

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

/// A token split into its parts; `None` when the text is not a token at all.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("cyh_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// A new token's id, secret and full text.
pub fn generate() -> (String, String, String) {
    let id: [u8; 6] = rand::random();
    let secret: [u8; 32] = rand::random();
    let (id, secret) = (to_hex(&id), to_hex(&secret));
    let text = format!("cyh_{id}_{secret}");
    (id, secret, text)
}

/// What the hub stores of a secret.
pub fn secret_hash(secret: &str) -> String {
    to_hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in time independent of where they differ.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let presented = secret_hash(secret);
    presented.len() == stored_hash.len()
        && presented
            .bytes()
            .zip(stored_hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a lab or token name: printable, no surrounding blanks, at most 100 characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 100
        || name.trim() != name
        || name.chars().any(|c| c.is_control())
    {
        return Err(format!(
            "{what} {name:?} must be 1 to 100 printable characters without surrounding spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_only_its_own_secret_matches() {
        let (id, secret, text) = generate();
        assert_eq!(parse(&text), Some((id.as_str(), secret.as_str())));
        let hash = secret_hash(&secret);
        assert!(secret_matches(&secret, &hash));
        let (_, other, _) = generate();
        assert!(!secret_matches(&other, &hash));
        assert_ne!(generate().2, text, "tokens are random");
    }

    #[test]
    fn a_stored_role_name_other_than_daemon_never_grants_uploads() {
        for role in [Role::Daemon, Role::Reader] {
            assert_eq!(Role::from_stored(role.as_str()), role);
        }
        assert_eq!(Role::from_stored("Daemon"), Role::Reader);
        assert_eq!(Role::from_stored(""), Role::Reader);
    }

    #[test]
    fn text_that_is_not_a_token_does_not_parse() {
        for bad in [
            "",
            "cyh_",
            "cyh_abc_def",
            "Bearer cyh_x",
            "cyh_0123456789ab_zz",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
