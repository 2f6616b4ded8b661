//! Bearer tokens as text, for both peers: the hub's (`cyh_...`) and the daemon's control API's
//! (`cyd_...`). Each issuer keeps its own storage and roles; the format, generation and the
//! secret's hash and check are here.
//!
//! A token is `<prefix>_<id>_<secret>`: the 12-hex-digit id finds the token's record and names
//! it in logs, the 64-hex-digit secret (256 random bits) proves it. Issuers keep only the
//! SHA-256 of the secret, so a copy of their storage lets nobody in; a high-entropy secret needs
//! no slow hash.

use sha2::{Digest, Sha256};

/// A token split into its id and secret; `None` when the text is not a token with `prefix`.
pub fn parse<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = token.trim().strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// A new token's id, secret and full text (`<prefix>_<id>_<secret>`).
pub fn generate(prefix: &str) -> (String, String, String) {
    let id: [u8; 6] = rand::random();
    let secret: [u8; 32] = rand::random();
    let (id, secret) = (to_hex(&id), to_hex(&secret));
    let text = format!("{prefix}_{id}_{secret}");
    (id, secret, text)
}

/// What an issuer stores of a secret.
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

/// Checks a token's (or lab's) name: printable, no surrounding blanks, at most 100 characters.
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

/// The token a request's `authorization: Bearer <token>` header carries; `None` without one.
pub fn presented(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_with_its_prefix_only_and_only_its_own_secret_matches() {
        let (id, secret, text) = generate("cyd");
        assert!(text.starts_with("cyd_"));
        assert_eq!(parse("cyd", &text), Some((id.as_str(), secret.as_str())));
        assert_eq!(parse("cyh", &text), None, "another issuer's prefix");
        let hash = secret_hash(&secret);
        assert!(secret_matches(&secret, &hash));
        let (_, other, _) = generate("cyd");
        assert!(!secret_matches(&other, &hash));
        assert_ne!(generate("cyd").2, text, "tokens are random");
    }

    #[test]
    fn text_that_is_not_a_token_does_not_parse() {
        for bad in [
            "",
            "cyh_",
            "cyh_abc_def",
            "Bearer cyh_x",
            "cyh_0123456789ab_zz",
            "cyhx0123456789ab_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(parse("cyh", bad), None, "{bad:?}");
        }
    }
}
