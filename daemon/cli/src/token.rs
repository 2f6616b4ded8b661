//! `cyclerd token issue|list|revoke`: the control API's tokens, kept in the configuration's
//! `[control] tokens_file` (see [`cyclerd::control::tokens`]). Run it as the daemon's user on
//! the daemon's machine: the file is created readable by that user only.

use clap::Subcommand;
use cyclerd::config::Config;
use cyclerd::control::tokens::{Role, TokenStore};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum TokenAction {
    /// Issue a token and print it once (only its hash is kept).
    Issue {
        /// The lab configuration, whose [control] tokens_file keeps the tokens.
        #[arg(long)]
        config: PathBuf,
        /// operator (start, stop, retry and read) or reader (read only).
        #[arg(long)]
        role: Role,
        /// Whose token it is (unique among the valid ones), to revoke it by.
        #[arg(long)]
        name: String,
    },
    /// The issued tokens: id, role, name, when issued, and whether revoked (never secrets).
    List {
        /// The lab configuration, whose [control] tokens_file keeps the tokens.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revoke a token by name or id; the daemon refuses it from the next call on.
    Revoke {
        /// The lab configuration, whose [control] tokens_file keeps the tokens.
        #[arg(long)]
        config: PathBuf,
        /// The token's name or id.
        which: String,
    },
}

fn store(config: &Path) -> anyhow::Result<TokenStore> {
    // Unchecked: a configuration beyond loopback is refused until it has a token.
    Ok(TokenStore::new(Config::read(config)?.control_tokens_file()))
}

/// Runs `action`, writing what it shows to `out`.
pub fn run(action: TokenAction, out: &mut impl Write) -> anyhow::Result<()> {
    match action {
        TokenAction::Issue { config, role, name } => {
            let store = store(&config)?;
            let (record, text) = store.issue(&name, role)?;
            eprintln!(
                "issued {} token {:?} (id {}) into {}; it is shown once, here:",
                record.role.as_str(),
                record.name,
                record.id,
                store.path().display()
            );
            writeln!(out, "{text}")?;
        }
        TokenAction::List { config } => {
            let store = store(&config)?;
            let tokens = store.list()?;
            if tokens.is_empty() {
                writeln!(out, "no tokens in {}", store.path().display())?;
            }
            for t in tokens {
                let state = match t.revoked_unix_s {
                    Some(at) => format!("revoked at {at}"),
                    None => "valid".into(),
                };
                writeln!(
                    out,
                    "{}  {:<8}  {:<20}  issued at {}  {state}",
                    t.id,
                    t.role.as_str(),
                    t.name,
                    t.created_unix_s
                )?;
            }
        }
        TokenAction::Revoke { config, which } => {
            let revoked = store(&config)?.revoke(&which)?;
            writeln!(out, "revoked token {:?} (id {})", revoked.name, revoked.id)?;
        }
    }
    Ok(())
}
