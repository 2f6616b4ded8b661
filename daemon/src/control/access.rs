//! Who may call what: the rule the control API applies (and the web monitor is to apply).
//!
//! A listener other machines can reach requires a token on every call: the calls that change
//! what a lab does (StartTest, StopTest, RetryDeadLetters) an operator's, the rest a reader's
//! or an operator's. A loopback listener is open to the machine's users, as before, unless
//! `[control] require_tokens` closes it too; [`crate::config::Config::control_requires_tokens`]
//! derives which from the configuration.

use super::tokens::{Caller, Refusal, Role, TokenStore};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The check every call runs.
#[derive(Debug, Clone)]
pub struct Access {
    /// The tokens calls must present; `None`: an open listener, every call allowed.
    tokens: Option<TokenStore>,
}

impl Access {
    /// Every call allowed, without a token (a loopback listener by default).
    pub fn open() -> Access {
        Access { tokens: None }
    }

    /// Every call needs a valid token from `tokens`, of the role the call needs.
    pub fn with_tokens(tokens: TokenStore) -> Access {
        Access {
            tokens: Some(tokens),
        }
    }

    /// Whether calls need a token.
    pub fn requires_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Lets a call named `call` that needs `need` through, or answers `UNAUTHENTICATED` (no
    /// token, or one that is not valid) or `PERMISSION_DENIED` (a reader's token for an
    /// operator's call). The caller is `None` on an open listener. Neither the answer nor the
    /// log ever holds the presented text; a refusal logs the token's public id at most.
    pub fn check(
        &self,
        metadata: &MetadataMap,
        need: Role,
        call: &str,
    ) -> Result<Option<Caller>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let Some(presented) = cyclerd_proto::token::presented(metadata) else {
            tracing::info!(call, "control API: a call without a token refused");
            return Err(Status::unauthenticated(format!(
                "this daemon's control API requires a token for {call}: on the daemon's machine \
                 run `cyclerd token issue --config FILE --role {} --name NAME`, then give it to \
                 cyclerctl with --token or CYCLERD_TOKEN",
                need.as_str()
            )));
        };
        let caller = tokens.authenticate(presented).map_err(|refusal| {
            tracing::warn!(call, "control API: {refusal}");
            match refusal {
                Refusal::Unreadable(_) => Status::unavailable(refusal.to_string()),
                _ => Status::unauthenticated(refusal.to_string()),
            }
        })?;
        if !caller.role.allows(need) {
            tracing::warn!(call, token = %caller.id, name = %caller.name, "control API: refused a {} token", caller.role.as_str());
            return Err(Status::permission_denied(format!(
                "{call} needs an operator's token; the token {:?} is a {}'s",
                caller.name,
                caller.role.as_str()
            )));
        }
        Ok(Some(caller))
    }
}
