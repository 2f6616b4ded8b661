//! The control API's tokens and the file that keeps them.
//!
//! A control token is `cyd_<id>_<secret>` (the format is [`cyclerd_proto::token`]'s, shared with
//! the hub's `cyh_` tokens) with a [`Role`]: an operator starts and stops tests and requeues
//! dead letters, a reader only looks. `cyclerd token issue` prints a token once; the file
//! (`[control] tokens_file`, TOML, created 0600) keeps its id, name, role and the SHA-256 of its
//! secret, never the secret. The daemon reads the file on every checked call, so a token issued
//! or revoked while it runs counts from the next call (the file is small).

use anyhow::{Context as _, bail};
use cyclerd_proto::token;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What starts every control token: `cyd_<id>_<secret>`.
pub const PREFIX: &str = "cyd";

/// What a token allows. A reader's calls are allowed to an operator too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Status, channels, watch, outbox: everything that only looks.
    Reader,
    /// Also starts and stops tests and requeues dead letters.
    Operator,
}

impl Role {
    /// As the command line and the file spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }

    /// Whether a token of this role may make a call that needs `need`.
    pub fn allows(self, need: Role) -> bool {
        self >= need
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            other => Err(format!("unknown role {other:?}; use operator or reader")),
        }
    }
}

/// One issued token as the file keeps it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The token's public part: finds it, and names it in logs.
    pub id: String,
    /// Given at issue (the person's or the tool's), to revoke it by.
    pub name: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    /// When it was issued (Unix seconds).
    pub created_unix_s: u64,
    /// When it was revoked (Unix seconds); absent while valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix_s: Option<u64>,
}

impl TokenRecord {
    pub fn is_valid(&self) -> bool {
        self.revoked_unix_s.is_none()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenRecord>,
}

const HEADER: &str = "# cyclerd control tokens, kept by `cyclerd token issue|revoke`: each token's \
                      id, name, role and the\n# SHA-256 of its secret (never the secret). Keep \
                      this file readable by the daemon's user only.\n\n";

/// Who made a call, as a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// Why a presented token is refused; the messages never contain the secret.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("the token is not valid for this daemon (mistyped, or issued for another daemon)")]
    Unknown,
    #[error("the token {name:?} was revoked; ask for a new one (`cyclerd token issue`)")]
    Revoked { name: String },
    #[error("the daemon cannot read its tokens file: {0}")]
    Unreadable(String),
}

/// The tokens file at a path.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token ever issued, revoked ones too; none when the file does not exist.
    pub fn list(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        let file: TokenFile = toml::from_str(&text)
            .with_context(|| format!("{} is not a tokens file", self.path.display()))?;
        Ok(file.tokens)
    }

    /// How many tokens are valid (issued and not revoked).
    pub fn valid_count(&self) -> anyhow::Result<usize> {
        Ok(self.list()?.iter().filter(|t| t.is_valid()).count())
    }

    /// Issues a token named `name` (unique among the valid ones) with `role`: returns its record
    /// and its text, which is shown once and kept nowhere.
    pub fn issue(&self, name: &str, role: Role) -> anyhow::Result<(TokenRecord, String)> {
        token::check_name("the token name", name).map_err(anyhow::Error::msg)?;
        let mut tokens = self.list()?;
        if tokens.iter().any(|t| t.is_valid() && t.name == name) {
            bail!(
                "a valid token is already named {name:?}; revoke it first or choose another name"
            );
        }
        let (id, secret, text) = token::generate(PREFIX);
        let record = TokenRecord {
            id,
            name: name.to_owned(),
            role,
            sha256: token::secret_hash(&secret),
            created_unix_s: now(),
            revoked_unix_s: None,
        };
        tokens.push(record.clone());
        self.write(tokens)?;
        Ok((record, text))
    }

    /// Revokes the valid token named (or with the id) `which`; returns its record.
    pub fn revoke(&self, which: &str) -> anyhow::Result<TokenRecord> {
        let mut tokens = self.list()?;
        let Some(found) = tokens
            .iter_mut()
            .find(|t| t.is_valid() && (t.name == which || t.id == which))
        else {
            bail!(
                "no valid token is named {which:?} in {} (see `cyclerd token list`)",
                self.path.display()
            );
        };
        found.revoked_unix_s = Some(now());
        let revoked = found.clone();
        self.write(tokens)?;
        Ok(revoked)
    }

    /// The caller a presented token names, read from the file as it is now.
    pub fn authenticate(&self, presented: &str) -> Result<Caller, Refusal> {
        let (id, secret) = token::parse(PREFIX, presented).ok_or(Refusal::Unknown)?;
        let tokens = self
            .list()
            .map_err(|e| Refusal::Unreadable(format!("{e:#}")))?;
        // Ids are random; a revoked and a valid record never share one.
        let record = tokens
            .iter()
            .find(|t| t.id == id && token::secret_matches(secret, &t.sha256))
            .ok_or(Refusal::Unknown)?;
        if !record.is_valid() {
            return Err(Refusal::Revoked {
                name: record.name.clone(),
            });
        }
        Ok(Caller {
            id: record.id.clone(),
            name: record.name.clone(),
            role: record.role,
        })
    }

    fn write(&self, tokens: Vec<TokenRecord>) -> anyhow::Result<()> {
        let body = toml::to_string(&TokenFile { tokens }).context("cannot write the tokens")?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        cyclerd_proto::files::replace_private(&self.path, format!("{HEADER}{body}").as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
