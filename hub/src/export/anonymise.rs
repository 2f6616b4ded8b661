//! Stable pseudonyms for an anonymised export.
//!
//! A pseudonym is `KIND-` and the first 12 hex digits (48 bits) of
//! HMAC-SHA256(lab secret, `KIND` 0x00 `value`), e.g. `cell-3f9a1c2e7b04`: the same cell gets the
//! same pseudonym in every export made with the same secret, so shared tests of one cell still
//! line up, while without the secret nobody can get from a pseudonym back to a cell id by hashing
//! candidate ids (cell ids, like people's names, are few and guessable). 48 bits keep the chance
//! that two of a lab's cells share a pseudonym below one in ten million for 10 000 cells.
//!
//! What is replaced in the metadata JSON:
//! - the test id (a UUIDv7, which also embeds the hub's clock) by `test-...`;
//! - in every tier, keys naming the cell: `cell_id`, `cell`, and any key containing `serial` or
//!   `barcode` (`secondary.serial_number`, `tertiary.cell_barcode`) by `cell-...`;
//! - keys containing `owner` by `owner-...` and `operator` by `operator-...`;
//! - keys containing `email`, `contact` or `author` by `person-...`.
//!
//! Key names are compared case-insensitively with `-` and spaces read as `_`. Then every other
//! string of the test's metadata (free-form values, the protocol name, the reason the test ended,
//! tier key names) has any occurrence of a replaced value as a whole word, in any ASCII case,
//! replaced by its pseudonym: a note "cell NMC-0042 from ada" would otherwise give both away,
//! while an operator "demo" leaves "demonstration" alone.

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest lab secret accepted, in bytes: the secret is all that keeps a pseudonym from being
/// reversed by hashing guessed ids.
pub const MIN_SECRET_BYTES: usize = 16;

/// Hex digits of the HMAC kept in a pseudonym.
const PSEUDONYM_HEX_DIGITS: usize = 12;

/// What a pseudonym stands for; its prefix, and a separate HMAC domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A cell identifier (cell id, serial number, barcode).
    Cell,
    /// The test's owner.
    Owner,
    /// The operator who ran the test.
    Operator,
    /// Any other person named in the metadata (an e-mail, a contact, an author).
    Person,
    /// The hub's test id.
    Test,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Cell => "cell",
            Kind::Owner => "owner",
            Kind::Operator => "operator",
            Kind::Person => "person",
            Kind::Test => "test",
        }
    }

    /// The kind of identifier a metadata key (without its `secondary.`/`tertiary.` prefix)
    /// holds, or `None` when it holds no identifier.
    pub fn of_key(key: &str) -> Option<Kind> {
        let key = key.to_ascii_lowercase().replace(['-', ' '], "_");
        let has = |part: &str| key.contains(part);
        if key == "cell_id" || key == "cell" || has("serial") || has("barcode") {
            Some(Kind::Cell)
        } else if has("owner") {
            Some(Kind::Owner)
        } else if has("operator") {
            Some(Kind::Operator)
        } else if has("email") || has("contact") || has("author") {
            Some(Kind::Person)
        } else {
            None
        }
    }
}

/// The lab secret was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the lab secret is {0} bytes; it needs at least {MIN_SECRET_BYTES} random bytes, e.g. \
     `head -c 32 /dev/urandom | base64 > lab-secret`"
)]
pub struct SecretTooShort(pub usize);

/// Makes pseudonyms with one lab secret.
#[derive(Clone)]
pub struct Pseudonymiser {
    /// HMAC-SHA256 keyed with the secret; cloned for every pseudonym.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("Pseudonymiser { .. }")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser keyed with the lab's secret (typically a file's content). Trailing line
    /// breaks are ignored, so a secret file written with or without a final newline gives the
    /// same pseudonyms.
    pub fn new(secret: &[u8]) -> Result<Pseudonymiser, SecretTooShort> {
        let end = secret
            .iter()
            .rposition(|b| !matches!(b, b'\n' | b'\r'))
            .map_or(0, |i| i + 1);
        let secret = &secret[..end];
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort(secret.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        Ok(Pseudonymiser { mac })
    }

    /// The pseudonym of `value` as a `kind`, e.g. `cell-3f9a1c2e7b04`.
    pub fn pseudonym(&self, kind: Kind, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(kind.prefix().as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(kind.prefix().len() + 1 + PSEUDONYM_HEX_DIGITS);
        out.push_str(kind.prefix());
        out.push('-');
        for b in &digest[..PSEUDONYM_HEX_DIGITS / 2] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// One anonymisation of a test's metadata: the identifiers replaced so far, to scrub them from
/// the free text afterwards.
pub(crate) struct Anonymiser<'a> {
    /// Makes the pseudonyms.
    pseudonymiser: &'a Pseudonymiser,
    /// `(original, pseudonym)` of every replaced identifier.
    replaced: Vec<(String, String)>,
    /// Every pseudonym handed out: left as they are by [`Anonymiser::scrub`].
    pseudonyms: HashSet<String>,
}

impl<'a> Anonymiser<'a> {
    pub(crate) fn new(pseudonymiser: &'a Pseudonymiser) -> Anonymiser<'a> {
        Anonymiser {
            pseudonymiser,
            replaced: Vec::new(),
            pseudonyms: HashSet::new(),
        }
    }

    /// The pseudonym standing for `value`, remembered for [`Anonymiser::scrub`].
    pub(crate) fn replace(&mut self, kind: Kind, value: &str) -> String {
        let pseudonym = self.pseudonymiser.pseudonym(kind, value);
        self.replaced.push((value.to_owned(), pseudonym.clone()));
        self.pseudonyms.insert(pseudonym.clone());
        pseudonym
    }

    /// `s` with each occurrence of a replaced identifier (ASCII case-insensitively) as a whole
    /// word (no letter, digit or `_` right before or after it: the operator "demo" is not
    /// replaced inside "demonstration") replaced by its pseudonym, in one left-to-right pass so that a pseudonym just written is never
    /// matched again; a pseudonym itself is returned as it is.
    pub(crate) fn scrub(&self, s: &str) -> String {
        if self.pseudonyms.contains(s) {
            return s.to_owned();
        }
        let mut needles: Vec<(String, &str)> = self
            .replaced
            .iter()
            .filter(|(original, _)| !original.is_empty())
            .map(|(original, pseudonym)| (original.to_ascii_lowercase(), pseudonym.as_str()))
            .collect();
        // Longest first, so "NMC-0042-A" is not replaced as "NMC-0042" plus "-A".
        needles.sort_by_key(|(original, _)| std::cmp::Reverse(original.len()));
        // ASCII lowercasing keeps every byte offset, so offsets found in `lower` index `s`.
        let lower = s.to_ascii_lowercase();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let starts_word = !s[..i].chars().next_back().is_some_and(is_word_char);
            let found = needles.iter().find(|(original, _)| {
                starts_word
                    && lower[i..].starts_with(original.as_str())
                    && !s[i + original.len()..]
                        .chars()
                        .next()
                        .is_some_and(is_word_char)
            });
            if let Some((original, pseudonym)) = found {
                out.push_str(pseudonym);
                i += original.len();
            } else {
                let c = s[i..].chars().next().expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }
}

/// Letters, digits and `_`: an identifier is only replaced where neither neighbour is one.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a lab secret of more than sixteen bytes";

    #[test]
    fn pseudonym_is_the_truncated_hmac_of_kind_and_value() {
        let p = Pseudonymiser::new(SECRET).unwrap();
        // Python: hmac.new(SECRET, b"cell\0NMC-0042", hashlib.sha256).hexdigest()[:12]
        assert_eq!(p.pseudonym(Kind::Cell, "NMC-0042"), "cell-b7dd8b54dc93");
        // Kinds are separate domains: one person as owner and as operator is not linkable.
        assert_ne!(
            p.pseudonym(Kind::Owner, "ada")[6..],
            p.pseudonym(Kind::Operator, "ada")[9..]
        );
    }

    #[test]
    fn trailing_line_breaks_of_the_secret_do_not_change_pseudonyms() {
        let a = Pseudonymiser::new(SECRET).unwrap();
        let b = Pseudonymiser::new(&[SECRET, b"\r\n"].concat()).unwrap();
        assert_eq!(a.pseudonym(Kind::Test, "t"), b.pseudonym(Kind::Test, "t"));
        let other = Pseudonymiser::new(b"another secret, also long enough").unwrap();
        assert_ne!(
            a.pseudonym(Kind::Test, "t"),
            other.pseudonym(Kind::Test, "t")
        );
    }

    #[test]
    fn a_short_secret_is_refused() {
        let e = Pseudonymiser::new(b"short\n").unwrap_err();
        assert_eq!(e.0, 5);
        assert!(e.to_string().contains("at least 16"), "{e}");
    }

    #[test]
    fn identifying_keys_are_recognised_by_name() {
        for (key, kind) in [
            ("cell_id", Some(Kind::Cell)),
            ("Serial Number", Some(Kind::Cell)),
            ("cell-barcode", Some(Kind::Cell)),
            ("owner", Some(Kind::Owner)),
            ("lab_owner", Some(Kind::Owner)),
            ("operator", Some(Kind::Operator)),
            ("contact_email", Some(Kind::Person)),
            ("form_factor", None),
            ("cell_model", None),
            ("chemistry", None),
        ] {
            assert_eq!(Kind::of_key(key), kind, "{key}");
        }
    }

    #[test]
    fn scrub_replaces_identifiers_in_free_text_but_keeps_pseudonyms() {
        let p = Pseudonymiser::new(SECRET).unwrap();
        let mut a = Anonymiser::new(&p);
        let cell = a.replace(Kind::Cell, "NMC-0042");
        let cell_a = a.replace(Kind::Cell, "NMC-0042-A");
        let ada = a.replace(Kind::Operator, "Ada");
        assert_eq!(
            a.scrub("cell nmc-0042 and NMC-0042-A, handled by ADA"),
            format!("cell {cell} and {cell_a}, handled by {ada}")
        );
        assert_eq!(a.scrub(&cell), cell);
        assert_eq!(a.scrub("Zoë's note"), "Zoë's note");
    }

    #[test]
    fn scrub_replaces_identifiers_only_as_whole_words_never_inside_other_words() {
        let p = Pseudonymiser::new(SECRET).unwrap();
        let mut a = Anonymiser::new(&p);
        let operator = a.replace(Kind::Operator, "demo");
        let owner = a.replace(Kind::Owner, "cyclerd");
        assert_eq!(
            a.scrub("demonstration of the cyclerd data path"),
            format!("demonstration of the {owner} data path")
        );
        assert_eq!(a.scrub("demo"), operator);
        assert_eq!(
            a.scrub("run by demo; cyclerd_lab, cyclerdx and démo stay, (demo) goes"),
            format!("run by {operator}; cyclerd_lab, cyclerdx and démo stay, ({operator}) goes")
        );
        assert_eq!(a.scrub("ademo demo2 démo"), "ademo demo2 démo");
    }
}
