//! Daemon tokens: what `cyclerhub token issue` hands out and the hub checks on every upload.
//!
//! A token is `cyh_<id>_<secret>`: the 12-hex-digit id finds the token's row, the 64-hex-digit
//! secret (256 random bits) proves it. The hub keeps only the SHA-256 of the secret, so a copy
//! of the database lets nobody upload; a high-entropy secret needs no slow hash. Each token
//! belongs to a lab; the first daemon that uploads with it is bound to that lab, and a daemon
//! may then only write with tokens of its own lab (its tests are its lab's tests).

use sha2::{Digest, Sha256};

/// One issued token as the hub keeps it (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Public part of the token, to find it and to name it in logs.
    pub token_id: String,
    /// The lab whose daemons may upload with it.
    pub lab: String,
    /// Unique name given at issue (usually the daemon's), to revoke it by.
    pub name: String,
    /// When it was issued and revoked (Unix seconds).
    pub created_unix_s: f64,
    pub revoked_unix_s: Option<f64>,
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
