//! Tokens as text and as the hub keeps them, with no storage in sight: the format
//! `cyh_<id>_<secret>`, generating one, hashing and checking its secret, its [`Role`] and its
//! stored row ([`TokenRow`]), and the rule for lab and token names.
//!
//! A token is `cyh_<id>_<secret>`: the 12-hex-digit id finds the token's row, the 64-hex-digit
//! secret (256 random bits) proves it. The hub keeps only the SHA-256 of the secret, so a copy
//! of the database lets nobody in; a high-entropy secret needs no slow hash. The format's code
//! is shared with the daemon's control tokens, in [`cyclerd_proto::token`].

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

/// What starts every hub token: `cyh_<id>_<secret>`.
pub const PREFIX: &str = "cyh";

/// A token split into its parts; `None` when the text is not a hub token at all.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    cyclerd_proto::token::parse(PREFIX, token)
}

/// A new token's id, secret and full text.
pub fn generate() -> (String, String, String) {
    cyclerd_proto::token::generate(PREFIX)
}

// The secret's hash and check, and the name rule, are shared with the daemon's control tokens.
pub use cyclerd_proto::token::{check_name, secret_hash, secret_matches};

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
