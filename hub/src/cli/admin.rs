//! Running a hub's lab: `setup`, `token`, `schema` and `labs`.

use super::{SchemaAction, TokenAction, open, utc};
use crate::store::HubStore;
use crate::token::Role;
use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::path::Path;

pub(super) fn token(action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Issue {
            db,
            lab,
            name,
            reader,
        } => {
            let role = if reader { Role::Reader } else { Role::Daemon };
            let token = open(&db, false)?.issue_token(&lab, &name, role)?;
            println!("{token}");
            let usage = match role {
                Role::Daemon => {
                    "put it in the daemon's hub.token_file (readable only by the \
                                 daemon's user)"
                }
                Role::Reader => {
                    "keep it in a file only you can read and pass it to \
                                 `cyclerhub tests|samples --hub URL --token-file FILE`"
                }
            };
            eprintln!(
                "{} token {name:?} for lab {lab:?}: shown once; {usage}",
                role.as_str()
            );
        }
        TokenAction::Revoke { db, name } => {
            open(&db, true)?.revoke_token(&name)?;
            eprintln!("token {name:?} revoked");
        }
        TokenAction::List { db } => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<24}  {:<16}  {:<6}  {:<12}  {:<20}  STATE",
                "NAME", "LAB", "ROLE", "ID", "ISSUED (UTC)"
            )?;
            for t in open(&db, true)?.tokens()? {
                let state = t
                    .revoked_unix_s
                    .map_or("valid".to_string(), |r| format!("revoked {}", utc(r)));
                writeln!(
                    out,
                    "{:<24}  {:<16}  {:<6}  {:<12}  {:<20}  {state}",
                    t.name,
                    t.lab,
                    t.role.as_str(),
                    t.token_id,
                    utc(t.created_unix_s)
                )?;
            }
        }
    }
    Ok(())
}

pub(super) fn schema(action: SchemaAction) -> Result<()> {
    match action {
        SchemaAction::Set {
            db,
            lab,
            tier,
            file,
        } => {
            let document = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the schema {}", file.display()))?;
            open(&db, false)?
                .set_metadata_schema(&lab, &tier, &document)
                .with_context(|| format!("{}", file.display()))?;
            eprintln!(
                "lab {lab:?}: {tier} metadata schema set from {}",
                file.display()
            );
        }
        SchemaAction::Show { db, lab } => {
            let schemas = open(&db, true)?.metadata_schemas(&lab)?;
            if schemas.is_empty() {
                eprintln!("lab {lab:?} has no metadata schemas: every tier accepts anything");
            }
            let mut out = std::io::stdout().lock();
            for s in schemas {
                writeln!(out, "# {} (set {} UTC)", s.tier, utc(s.updated_unix_s))?;
                writeln!(out, "{}", s.schema_json.trim_end())?;
            }
        }
        SchemaAction::Remove { db, lab, tier } => {
            open(&db, true)?.remove_metadata_schema(&lab, &tier)?;
            eprintln!("lab {lab:?}: {tier} metadata schema removed");
        }
    }
    Ok(())
}

pub(super) fn labs(store: &HubStore) -> Result<()> {
    let (teams, daemons, tokens) = (store.teams()?, store.daemon_labs()?, store.tokens()?);
    let mut out = std::io::stdout().lock();
    let labs = store.labs()?;
    if labs.is_empty() {
        eprintln!("no labs yet: `cyclerhub token issue --lab LAB --name NAME` makes one");
    }
    for (lab, created) in labs {
        let teams: Vec<&str> = teams
            .iter()
            .filter(|t| t.lab == lab)
            .map(|t| t.team.as_str())
            .collect();
        let mut lab_daemons: Vec<&str> = daemons
            .iter()
            .filter(|(_, l)| **l == lab)
            .map(|(d, _)| d.as_str())
            .collect();
        lab_daemons.sort_unstable();
        let valid = tokens
            .iter()
            .filter(|t| t.lab == lab && t.revoked_unix_s.is_none())
            .count();
        let schemas: Vec<String> = store
            .metadata_schemas(&lab)?
            .into_iter()
            .map(|s| s.tier)
            .collect();
        let list = |v: &[&str]| {
            if v.is_empty() {
                "-".into()
            } else {
                v.join(", ")
            }
        };
        writeln!(out, "{lab} (since {} UTC)", utc(created))?;
        writeln!(out, "  teams:    {}", list(&teams))?;
        writeln!(out, "  daemons:  {}", list(&lab_daemons))?;
        writeln!(out, "  tokens:   {valid} valid")?;
        writeln!(
            out,
            "  metadata schemas: {}",
            if schemas.is_empty() {
                "-".into()
            } else {
                schemas.join(", ")
            }
        )?;
    }
    Ok(())
}

/// `cyclerhub setup`: sets the lab up ([`crate::setup`]) and says how to serve it and what a
/// daemon needs.
pub(super) fn setup(
    db: &str,
    dir: &Path,
    lab: &str,
    hosts: &[String],
    (daemons, readers): (&[String], &[String]),
) -> Result<()> {
    let store = open(db, false)?;
    let setup = crate::setup::Setup {
        dir,
        lab,
        hosts,
        daemons,
        readers,
    };
    let w = crate::setup::setup(&store, &setup)?;
    let port = 50051;
    println!("lab {lab:?} set up in {}:", dir.display());
    println!("  lab CA (every daemon's hub.ca_file): {}", w.ca.display());
    println!(
        "  lab CA key (signs a new hub certificate; keep it offline): {}",
        w.ca_key.display()
    );
    println!(
        "  hub certificate and key: {} {}",
        w.cert.display(),
        w.key.display()
    );
    for (name, role, file) in &w.tokens {
        println!("  {} token {name:?}: {}", role.as_str(), file.display());
    }
    println!("serve it:");
    println!(
        "  cyclerhub serve --db {db} --listen 0.0.0.0:{port} --tls-cert {} --tls-key {} --require-tokens",
        w.cert.display(),
        w.key.display()
    );
    println!("and in each daemon's configuration (with its own token file):");
    println!(
        "  [hub]\n  address = \"https://{}:{port}\"\n  ca_file = \"{}\"\n  token_file = \"/etc/cyclerd/hub.token\"",
        hosts[0],
        w.ca.display()
    );
    Ok(())
}
