//! `cyclerhub share add|list|remove`: the shares this hub sends to other hubs, kept in its
//! database and run by `cyclerhub serve` ([`crate::share`]).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

use super::open;
use crate::share::Selection;
use crate::store::ShareRow;
use crate::utc::Utc;

/// The arguments of `share add`.
#[derive(Args)]
pub(super) struct AddArgs {
    /// Hub database: a SQLite file or a `postgres://` URL.
    #[arg(long)]
    db: String,
    /// The share's name on this hub (to list and remove it by).
    name: String,
    /// The receiving hub's gRPC address: https://HOST:PORT (or http:// on loopback).
    #[arg(long, value_name = "URL")]
    to: String,
    /// A daemon token of the receiving hub (`cyclerhub token issue` there), for the lab
    /// the shared tests go to; read at every connection, never stored or logged.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The receiving hub's CA certificate (PEM), for an https:// --to.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// How this hub names itself to the receiver, which shows it as the tests' provenance
    /// (default: this machine's host name).
    #[arg(long)]
    origin: Option<String>,
    /// Only tests of this lab's daemons.
    #[arg(long)]
    lab: Option<String>,
    /// Only tests of this team (metadata `team`).
    #[arg(long)]
    team: Option<String>,
    /// Only tests of this cell (`cell_id`; repeat for several).
    #[arg(long = "cell")]
    cells: Vec<String>,
    /// Only tests of this chemistry.
    #[arg(long)]
    chemistry: Option<String>,
    /// Only tests with this tag among the comma-separated words of their metadata `tags`
    /// (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only this test (its id; repeat for a list).
    #[arg(long = "test")]
    tests: Vec<String>,
    /// Only tests that ended graded this letter or better (A best to E; see docs/quality.md):
    /// each is sent once it has ended, whole.
    #[arg(long, value_name = "LETTER", value_parser = grade_letter)]
    min_grade: Option<char>,
    /// Share every test of this hub (no criterion): said explicitly, never by omission.
    #[arg(long)]
    all: bool,
    /// Share what matches now, then stop (the share stays listed as done).
    #[arg(long)]
    once: bool,
    /// Replace identifiers by the lab's pseudonyms, as the anonymised export does (the test
    /// id, cell, owner, operator and people; instrument addresses left out). Needs --salt.
    #[arg(long, alias = "anonymize")]
    anonymise: bool,
    /// File holding the lab's secret for --anonymise (the same as for exports, so a cell
    /// has one pseudonym everywhere).
    #[arg(long, env = "CYCLERHUB_SALT_FILE", value_name = "FILE")]
    salt: Option<PathBuf>,
    /// Allow an http:// --to on another machine: tests and the token cross the network in
    /// clear.
    #[arg(long)]
    insecure: bool,
}

#[derive(Subcommand)]
pub(super) enum ShareAction {
    /// Share the tests that match (every criterion given; a repeated one matches any of its
    /// values) with another hub, continuously (the running `serve` sends new samples as they
    /// arrive) or with --once what matches now. A test outside the share never leaves.
    Add(Box<AddArgs>),
    /// List the shares: where they go, what they select, their state, how far the receiver
    /// has acknowledged of what is logged, and the last error.
    List {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
    },
    /// Remove a share: the running hub stops its stream within a second, and nothing more of
    /// it is sent. What the receiver holds stays there.
    Remove {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The share's name (see `cyclerhub share list`).
        name: String,
    },
}

pub(super) fn share(action: ShareAction) -> Result<()> {
    match action {
        ShareAction::Add(args) => {
            let AddArgs {
                db,
                name,
                to,
                token_file,
                ca_file,
                origin,
                lab,
                team,
                cells,
                chemistry,
                tags,
                tests,
                min_grade,
                all,
                once,
                anonymise,
                salt,
                insecure,
            } = *args;
            let selection = Selection {
                lab,
                team,
                cells,
                chemistry,
                tags,
                tests,
                min_grade,
            };
            let target = Target {
                url: to,
                token_file,
                ca_file,
                insecure,
            };
            add(
                &db,
                &name,
                target,
                (selection, all),
                once,
                origin,
                anonymise.then_some(salt),
            )
        }
        ShareAction::List { db } => list(&db),
        ShareAction::Remove { db, name } => {
            if !open(&db, true)?.remove_share(&name)? {
                bail!("no share named {name:?} (see `cyclerhub share list`)");
            }
            eprintln!("share {name} removed: a running hub stops sending it within a second");
            Ok(())
        }
    }
}

/// Where a share goes and how it gets there.
struct Target {
    /// The receiving hub's URL.
    url: String,
    /// Its token, if it requires one.
    token_file: Option<PathBuf>,
    /// Its CA, for https://.
    ca_file: Option<PathBuf>,
    /// Plain http:// to another machine allowed.
    insecure: bool,
}

fn add(
    db: &str,
    name: &str,
    target: Target,
    (selection, all): (Selection, bool),
    once: bool,
    origin: Option<String>,
    anonymise: Option<Option<PathBuf>>,
) -> Result<()> {
    crate::token::check_name("share name", name).map_err(anyhow::Error::msg)?;
    if selection == Selection::default() && !all {
        bail!(
            "say what to share: --lab, --team, --cell, --chemistry, --tag, --test or --min-grade \
             (or --all for every test of this hub)"
        );
    }
    if selection != Selection::default() && all {
        bail!("--all shares every test; give it without other criteria");
    }
    let url = &target.url;
    match url.split_once("://").map(|(s, _)| s) {
        Some("https") if target.ca_file.is_none() => bail!(
            "--to {url} needs --ca-file FILE: the CA (PEM) that signed the receiving hub's \
             certificate"
        ),
        Some("https") => {}
        Some("http") if target.ca_file.is_some() => {
            bail!("--ca-file is for a hub served over TLS: give its https:// address, not {url}")
        }
        Some("http") if cyclerd_proto::in_clear_to_another_host(url) && !target.insecure => bail!(
            "--to {url} is plain http to another machine: the tests and the token would cross \
             the network in clear; serve the receiving hub with TLS and give https://, or say \
             --insecure for a network you trust"
        ),
        Some("http") => {}
        _ => bail!("--to {url} must start with https:// (or http:// on loopback)"),
    }
    tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("--to {url} is not a URL (https://HOST:PORT)"))?;
    // Checked now, and stored as absolute paths: `serve` may run elsewhere.
    let token_file = target
        .token_file
        .map(|f| {
            crate::remote::read_token(&f)?;
            absolute(&f)
        })
        .transpose()?;
    let ca_file = target
        .ca_file
        .map(|f| {
            std::fs::read(&f)
                .with_context(|| format!("cannot read the CA file {}", f.display()))?;
            absolute(&f)
        })
        .transpose()?;
    let salt_file = match anonymise {
        Some(salt) => {
            // Checked now: a share that cannot make pseudonyms must not be stored.
            super::read::pseudonymiser(salt.clone())?;
            Some(absolute(&salt.expect("checked by pseudonymiser"))?)
        }
        None => None,
    };
    let origin = origin.unwrap_or_else(host_name);
    crate::token::check_name("--origin", &origin).map_err(anyhow::Error::msg)?;
    let store = open(db, false)?;
    // A typo in a test id would share nothing, silently.
    for id in &selection.tests {
        if store.test(id)?.is_none() {
            bail!("--test {id}: this hub has no such test (see `cyclerhub tests --db {db}`)");
        }
    }
    let (stream_id, stream_secret, epoch) = crate::share::new_stream_identity();
    let row = ShareRow {
        name: name.to_owned(),
        target: url.clone(),
        ca_file,
        token_file,
        salt_file,
        selection: serde_json::to_string(&selection)?,
        once,
        origin,
        stream_id,
        stream_secret,
        epoch,
        created_unix_s: now(),
        acked: 0,
        state: "waiting".into(),
        last_error: None,
        updated_unix_s: None,
        logged: 0,
    };
    store.add_share(&row)?;
    let logged = if once {
        // What matches now is all a --once share ever sends.
        match crate::share::fill(&store, &row) {
            Ok(n) => format!(", {n} entries to send"),
            Err(e) => {
                let _ = store.remove_share(name);
                return Err(e.into());
            }
        }
    } else {
        String::new()
    };
    eprintln!(
        "share {name} added ({}{}{logged}): a running `cyclerhub serve` on this database starts \
         sending it to {url} within a second",
        if once { "once" } else { "continuous" },
        if row.salt_file.is_some() {
            ", anonymised"
        } else {
            ""
        },
    );
    Ok(())
}

fn list(db: &str) -> Result<()> {
    let shares = open(db, true)?.shares()?;
    if shares.is_empty() {
        println!("no shares (add one with `cyclerhub share add`)");
        return Ok(());
    }
    for s in shares {
        let selection: Selection = serde_json::from_str(&s.selection).unwrap_or_default();
        let updated = s
            .updated_unix_s
            .and_then(Utc::from_unix_s)
            .map_or_else(|| "never".into(), |t| t.seconds());
        println!(
            "{}\t{}\t{}{}\t{}\t{}\tacked {} of {}\tupdated {}{}",
            s.name,
            s.target,
            if s.once { "once" } else { "continuous" },
            if s.salt_file.is_some() {
                ", anonymised"
            } else {
                ""
            },
            selection.describe(None),
            s.state,
            s.acked,
            s.logged,
            updated,
            s.last_error
                .map(|e| format!("\tlast error: {e}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<String> {
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot make {} an absolute path", path.display()))?;
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// This machine's name, for a share's default origin.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "cyclerhub".into())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `--min-grade`: a grade letter, A to E.
fn grade_letter(text: &str) -> Result<char, String> {
    cyclerd_proto::quality::grade::parse_letter(text)
}
