//! The `cyclerhub` command line: serve the lab hub, issue its tokens, list its tests and read
//! their samples (from the database, or from a running hub with `--hub`), export a test. A
//! library module so that tests can run the real binary's code as a child process (and kill it).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::export::{ExportError, Format, Pseudonymiser};
use crate::query::{Columns, CsvWriter, TestFilter};
use crate::remote::Remote;
use crate::store::{HubStore, StoreError};
use crate::token::Role;
use crate::utc::Utc;
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use cyclerd_proto::hub::{Cell, TestDetail, TestSummary};

/// The cyclerd lab hub: receives daemons' upload streams, stores tests, exports them.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ingest API (plus gRPC health and reflection) until Ctrl-C.
    Serve {
        /// Hub database: a SQLite file (created if missing) or a PostgreSQL URL
        /// (`postgres://USER@HOST/DB`; the database must exist). Migrations run on start. TLS to
        /// PostgreSQL as with libpq: `?sslmode=verify-full&sslrootcert=CA.pem` (also `disable`,
        /// `prefer`, the default, `require`, `verify-ca`).
        #[arg(long)]
        db: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// TLS certificate chain (PEM); with --tls-key, daemons connect with https://.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Refuse uploads and queries without a valid token (see `cyclerhub token`), and answer
        /// each token's queries about its own lab only.
        #[arg(long)]
        require_tokens: bool,
        /// Serve on an address reachable from other machines without TLS or without required
        /// tokens (a closed lab network you trust); without it such a start is refused.
        #[arg(long)]
        insecure: bool,
        /// Upload streams served at once; one more is refused with RESOURCE_EXHAUSTED and its
        /// daemon retries later.
        #[arg(long, default_value_t = 64)]
        max_upload_streams: usize,
        /// Bytes of entries applied at once, all streams together (more waits for room).
        #[arg(long, default_value_t = 256 << 20)]
        max_bytes_in_flight: usize,
    },
    /// Set up a lab's hub securely in one go: a lab CA, the hub's TLS certificate for the names
    /// daemons reach it by, and the first tokens, written into --dir (keys and tokens readable
    /// by their owner only; nothing is overwritten). Prints how to serve and what a daemon needs.
    Setup {
        /// Hub database: a SQLite file (created if missing) or a PostgreSQL URL.
        #[arg(long)]
        db: String,
        /// Where the certificates, keys and tokens go (e.g. /etc/cyclerhub).
        #[arg(long)]
        dir: PathBuf,
        /// The lab the tokens belong to.
        #[arg(long)]
        lab: String,
        /// A name or address daemons reach the hub by (repeat: --host hub.lab --host 192.0.2.10).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// A daemon to issue a token for (repeat for each lab PC).
        #[arg(long = "daemon")]
        daemons: Vec<String>,
        /// A person to issue a read-only token for (repeat).
        #[arg(long = "reader")]
        readers: Vec<String>,
    },
    /// Issue, list and revoke tokens (daemons', and read-only ones for people).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Register, show and remove a lab's JSON Schemas for secondary and tertiary metadata.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// List the labs, with their teams, daemons, tokens and metadata schemas.
    Labs {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
    },
    /// Assign a daemon, and every test it uploaded, to a lab (or move it to another): for a
    /// daemon that uploaded before the hub required tokens (its token may then write for it).
    Assign {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The daemon's id (see `cyclerhub tests`).
        #[arg(long)]
        daemon: String,
        /// Its lab.
        #[arg(long)]
        lab: String,
    },
    /// List the tests in the hub, one per line.
    Tests {
        #[command(flatten)]
        source: ReadFrom,
        /// Only tests of this cell (`cell_id`).
        #[arg(long, default_value = "")]
        cell: String,
        /// Only tests of this chemistry.
        #[arg(long, default_value = "")]
        chemistry: String,
        /// Only tests in this state: running, finished, stopped or faulted.
        #[arg(long, default_value = "")]
        state: String,
        /// Only tests of this daemon.
        #[arg(long, default_value = "")]
        daemon: String,
        /// Only tests of this lab's daemons.
        #[arg(long, default_value = "")]
        lab: String,
        /// Only tests of this team (metadata `team`).
        #[arg(long, default_value = "")]
        team: String,
        /// Only tests started at or after this Unix time (s).
        #[arg(long, default_value_t = 0.0)]
        since: f64,
        /// Only tests started before this Unix time (s).
        #[arg(long, default_value_t = 0.0)]
        until: f64,
    },
    /// List the cells the hub has seen tests of, with what their tests' metadata says.
    Cells {
        #[command(flatten)]
        source: ReadFrom,
        /// Only cells with a test of this lab (with --hub and a token: the token's lab).
        #[arg(long, default_value = "")]
        lab: String,
    },
    /// Show one test: its state, metadata (and where it breaks the lab's schemas), instruments
    /// and events.
    Show {
        #[command(flatten)]
        source: ReadFrom,
        /// The test (see `cyclerhub tests`).
        test_id: String,
    },
    /// Print a test's samples as CSV (seq and the chosen columns).
    Samples {
        #[command(flatten)]
        source: ReadFrom,
        /// The test (see `cyclerhub tests`).
        test_id: String,
        /// Columns, comma-separated (default: all): test_time_s, unix_time_s, voltage_v,
        /// current_a, cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh,
        /// discharge_energy_wh, temperature_c, ambient_temperature_c.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// From this test time (s).
        #[arg(long, default_value_t = 0.0)]
        from: f64,
        /// To this test time (s); 0 = the end.
        #[arg(long, default_value_t = 0.0)]
        to: f64,
        /// With --hub: keep printing the test's new samples as the hub stores them, until the
        /// test ends (a whole test; not with --from or --to).
        #[arg(long, conflicts_with_all = ["db", "from", "to"])]
        follow: bool,
    },
    /// Export one test: BDF CSV or Parquet, or Battery Archive CSV, with a metadata JSON beside.
    Export {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The test to export (see `cyclerhub tests --db FILE`).
        test_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::BdfCsv)]
        format: Format,
        /// Output file (BDF), or file-name prefix (Battery Archive: PREFIX_timeseries.csv and
        /// PREFIX_cycle_data.csv); the metadata JSON goes beside it (OUTPUT.metadata.json,
        /// PREFIX.metadata.json). When absent, BDF CSV goes to standard output, without metadata.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the test id and the owner, operator and cell identifiers in the metadata by
        /// stable pseudonyms (needs --salt).
        #[arg(long, alias = "anonymize")]
        anonymise: bool,
        /// File holding the lab's secret for --anonymise: at least 16 random bytes, kept private
        /// and the same for every export, so that a cell keeps its pseudonym.
        #[arg(long, env = "CYCLERHUB_SALT_FILE", value_name = "FILE")]
        salt: Option<PathBuf>,
    },
}

/// Where `tests` and `samples` read: the hub database itself, or a running hub.
#[derive(Args)]
struct ReadFrom {
    #[command(flatten)]
    origin: Origin,
    /// With an https:// --hub: the lab CA (PEM) that signed the hub's certificate.
    #[arg(long, conflicts_with = "db", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// With --hub: a file holding a token of your lab (`cyclerhub token issue --reader`), for a
    /// hub that requires tokens.
    #[arg(long, conflicts_with = "db", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Exactly one of the database and a hub's address.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Origin {
    /// Hub database: a SQLite file or a `postgres://` URL.
    #[arg(long)]
    db: Option<String>,
    /// A running hub to ask instead: http://HOST:PORT, or https://HOST:PORT with --ca-file.
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
}

/// What `tests` and `samples` read from.
enum Reader {
    /// The database, opened directly.
    Db(HubStore),
    /// A hub's query service (boxed: it holds a runtime, the store is one pointer).
    Hub(Box<Remote>),
}

impl ReadFrom {
    fn open(&self) -> Result<Reader> {
        match (&self.origin.db, &self.origin.hub) {
            (Some(db), _) => Ok(Reader::Db(open(db, true)?)),
            (None, Some(url)) => Ok(Reader::Hub(Box::new(Remote::connect(
                url,
                self.ca_file.as_deref(),
                self.token_file.as_deref(),
            )?))),
            // clap's group requires one of the two.
            (None, None) => bail!("give --db FILE or --hub URL"),
        }
    }
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` that stopped reading: not an error of ours.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // `{:#}`: the whole context chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup {
            db,
            dir,
            lab,
            hosts,
            daemons,
            readers,
        } => {
            let store = open(&db, false)?;
            let setup = crate::setup::Setup {
                dir: &dir,
                lab: &lab,
                hosts: &hosts,
                daemons: &daemons,
                readers: &readers,
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
        Command::Serve {
            db,
            listen,
            tls_cert,
            tls_key,
            require_tokens,
            insecure,
            max_upload_streams,
            max_bytes_in_flight,
        } => {
            let limits = (max_upload_streams.max(1), max_bytes_in_flight.max(1024));
            serve(
                db,
                listen,
                tls_cert.zip(tls_key),
                require_tokens,
                insecure,
                limits,
            )
        }
        Command::Token { action } => token(action),
        Command::Schema { action } => schema(action),
        Command::Labs { db } => labs(&db),
        Command::Assign { db, daemon, lab } => {
            let before = open(&db, true)?.assign_daemon(&daemon, &lab)?;
            let moved = match before {
                Some(before) if before != lab => format!(" (moved from lab {before:?})"),
                _ => String::new(),
            };
            eprintln!("daemon {daemon} and its tests belong to lab {lab:?}{moved}");
            Ok(())
        }
        Command::Cells { source, lab } => {
            let cells = match source.open()? {
                Reader::Db(store) => crate::query::cells_of(&store, &lab)?
                    .iter()
                    .map(crate::query::cell)
                    .collect(),
                Reader::Hub(mut hub) => hub.list_cells(&lab)?,
            };
            print_cells(&mut std::io::stdout().lock(), &cells)
        }
        Command::Tests {
            source,
            cell,
            chemistry,
            state,
            daemon,
            lab,
            team,
            since,
            until,
        } => list_tests(
            &source,
            TestFilter {
                lab,
                team,
                daemon_id: daemon,
                cell_id: cell,
                chemistry,
                state,
                started_after_unix_s: since,
                started_before_unix_s: until,
            },
        ),
        Command::Show { source, test_id } => show(&source, &test_id),
        Command::Samples {
            source,
            test_id,
            columns,
            from,
            to,
            follow,
        } => samples(&source, &test_id, &columns, (from, to), follow),
        Command::Export {
            db,
            test_id,
            format,
            output,
            anonymise,
            salt,
        } => export(db, &test_id, format, output, anonymise.then_some(salt)),
    }
}

/// Opens the hub database `db` (a file or a URL). `must_exist`: a missing SQLite file is an
/// error rather than a new empty hub (a PostgreSQL database must exist anyway).
fn open(db: &str, must_exist: bool) -> Result<HubStore> {
    if must_exist && !crate::store::is_postgres_url(db) && !Path::new(db).exists() {
        bail!("hub database {db} does not exist; `cyclerhub serve --db {db}` creates it");
    }
    Ok(HubStore::connect(db)?)
}

#[derive(Subcommand)]
enum TokenAction {
    /// Issue a token for a daemon of LAB; prints it once (the hub keeps only its hash).
    Issue {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The lab whose tests the token may read, and its daemon write.
        #[arg(long)]
        lab: String,
        /// A unique name for the token (the daemon's, or the person's), to revoke it by.
        #[arg(long)]
        name: String,
        /// A read-only token, for `cyclerhub tests|samples --hub`: it reads the lab's tests
        /// but cannot upload.
        #[arg(long)]
        reader: bool,
    },
    /// Revoke the token named NAME: its uploads and queries are refused from now on.
    Revoke {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        name: String,
    },
    /// List the tokens (never their secrets).
    List {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
    },
}

fn token(action: TokenAction) -> Result<()> {
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

#[derive(Subcommand)]
enum SchemaAction {
    /// Register FILE as LAB's JSON Schema for TIER (replacing the one it had); daemons check
    /// the metadata of every test they start against it.
    Set {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The lab whose tests it applies to.
        #[arg(long)]
        lab: String,
        /// `secondary` or `tertiary`.
        #[arg(long)]
        tier: String,
        /// The JSON Schema document (any draft; one self-contained document).
        file: PathBuf,
    },
    /// Print LAB's schemas.
    Show {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The lab.
        #[arg(long)]
        lab: String,
    },
    /// Remove LAB's schema for TIER: that tier accepts anything again.
    Remove {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The lab.
        #[arg(long)]
        lab: String,
        /// `secondary` or `tertiary`.
        #[arg(long)]
        tier: String,
    },
}

fn schema(action: SchemaAction) -> Result<()> {
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

fn labs(db: &str) -> Result<()> {
    let store = open(db, true)?;
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

fn serve(
    db: String,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    require_tokens: bool,
    insecure: bool,
    (max_upload_streams, max_bytes_in_flight): (usize, usize),
) -> Result<()> {
    let open_to = open_to_the_network(listen, tls.is_some(), require_tokens);
    if let Some(missing) = &open_to
        && !insecure
    {
        anyhow::bail!(
            "refusing to serve on {listen}, which other machines can reach, without {missing}: \
             give --tls-cert FILE --tls-key FILE and --require-tokens (see `cyclerhub token \
             issue`), listen on 127.0.0.1, or say --insecure for a network you trust"
        );
    }
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let tls = match tls {
        Some((cert, key)) => Some(tonic::transport::Identity::from_pem(
            read(&cert, "certificate")?,
            read(&key, "key")?,
        )),
        None => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(missing) = &open_to {
        tracing::warn!(
            "--insecure: serving on {listen}, which other machines can reach, without {missing}: \
             anyone who reaches the port can upload as a daemon and read every lab's data"
        );
    }
    let store = open(&db, false)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (in use? try --listen ADDR)"))?;
        let shutdown = async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        };
        let options = crate::server::ServeOptions {
            tls,
            require_tokens,
            max_upload_streams,
            max_bytes_in_flight,
            ..crate::server::ServeOptions::default()
        };
        crate::server::run_with(listener, store, options, shutdown).await
    })
}

/// What a hub serving on `listen` lacks to be closed to strangers, when other machines can
/// reach it: TLS (else tokens and data cross the network in clear) and required tokens (else
/// anyone may upload and read). `None` on loopback, where only this machine's users reach it.
fn open_to_the_network(listen: SocketAddr, tls: bool, require_tokens: bool) -> Option<String> {
    if listen.ip().is_loopback() {
        return None;
    }
    match (tls, require_tokens) {
        (true, true) => None,
        (false, true) => Some("TLS".into()),
        (true, false) => Some("required tokens".into()),
        (false, false) => Some("TLS and required tokens".into()),
    }
}

/// Ctrl-C, or SIGTERM (what systemd and `kill` send) on unix; the daemon stops on the same.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot wait for Ctrl-C; stop the hub with SIGKILL");
        std::future::pending::<()>().await;
    }
}

fn list_tests(from: &ReadFrom, filter: TestFilter) -> Result<()> {
    // Checked here too, so that --db and --hub refuse the same filters with the same words.
    filter.check().map_err(anyhow::Error::msg)?;
    let (tests, place) = match from.open()? {
        Reader::Db(store) => {
            let tests = filter.select(&store)?;
            let tests = tests
                .iter()
                .map(|(t, lab)| crate::query::summary(t, lab))
                .collect();
            (tests, store.path().display().to_string())
        }
        Reader::Hub(mut hub) => (hub.list_tests(&filter)?, format!("hub {}", hub.url())),
    };
    if tests.is_empty() {
        eprintln!("no matching tests in {place}");
        return Ok(());
    }
    print_tests(&mut std::io::stdout().lock(), &tests)
}

fn show(from: &ReadFrom, test_id: &str) -> Result<()> {
    let detail = match from.open()? {
        Reader::Db(store) => {
            let Some(t) = store.test(test_id)? else {
                bail!(
                    "{}; `cyclerhub tests --db {}` lists the test ids",
                    StoreError::NoSuchTest(test_id.to_owned()),
                    store.path().display()
                );
            };
            let lab = store
                .daemon_labs()?
                .remove(&t.daemon_id)
                .unwrap_or_default();
            crate::query::detail(&store, &t, &lab)?
        }
        Reader::Hub(mut hub) => hub.get_test(test_id)?,
    };
    print_detail(&mut std::io::stdout().lock(), &detail)
}

/// What `cyclerhub show` prints of a test.
fn print_detail(out: &mut impl std::io::Write, d: &TestDetail) -> Result<()> {
    let s = d.summary.clone().unwrap_or_default();
    let or_dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    writeln!(out, "test      {}", s.test_id)?;
    writeln!(
        out,
        "lab       {}  team {}",
        or_dash(&s.lab),
        or_dash(&s.team)
    )?;
    writeln!(out, "daemon    {}  channel {}", s.daemon_id, s.channel_id)?;
    writeln!(out, "protocol  {}", s.protocol_name)?;
    let reason = if d.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.reason)
    };
    writeln!(out, "state     {}{reason}", s.state)?;
    let end = if s.end_unix_s > 0.0 {
        format!("  ended {} UTC", utc(s.end_unix_s))
    } else {
        String::new()
    };
    writeln!(out, "started   {} UTC{end}", utc(s.start_unix_s))?;
    let expected = if d.expected_samples > 0 {
        format!(" of {} the daemon counted", d.expected_samples)
    } else {
        String::new()
    };
    writeln!(out, "samples   {}{expected}", s.sample_count)?;
    writeln!(out, "metadata")?;
    let mut metadata: Vec<_> = d.metadata.iter().collect();
    metadata.sort();
    for (k, v) in metadata {
        writeln!(out, "  {k} = {v}")?;
    }
    if !d.metadata_problems.is_empty() {
        writeln!(out, "metadata problems (against the lab's schemas)")?;
        for p in &d.metadata_problems {
            writeln!(out, "  {p}")?;
        }
    }
    writeln!(out, "instruments")?;
    for e in &d.equipment {
        writeln!(
            out,
            "  {:<12}  {:<14}  {:<8}  {}",
            e.name, e.family, e.role, e.address
        )?;
    }
    writeln!(out, "events")?;
    for e in &d.events {
        writeln!(
            out,
            "  {} UTC  {:>10.1} s  {:<6}  cycle {} step {}: {}",
            utc(e.unix_time_s),
            e.test_time_s,
            e.kind,
            e.cycle,
            e.step,
            e.message
        )?;
    }
    Ok(())
}

/// The cell table `cyclerhub cells` prints, whatever it read the cells from.
fn print_cells(out: &mut impl std::io::Write, cells: &[Cell]) -> Result<()> {
    writeln!(
        out,
        "{:<14}  {:<20}  {:<12}  {:<16}  {:<14}  {:<10}  {:>8}  {:>7}  FIRST TEST (UTC)",
        "LAB", "CELL", "MANUFACTURER", "MODEL", "CHEMISTRY", "FORM", "Q / Ah", "U / V"
    )?;
    let text = |v: &str| if v.is_empty() { "-" } else { v }.to_owned();
    let num = |v: f64| if v > 0.0 { v.to_string() } else { "-".into() };
    for c in cells {
        writeln!(
            out,
            "{:<14}  {:<20}  {:<12}  {:<16}  {:<14}  {:<10}  {:>8}  {:>7}  {}",
            text(&c.lab),
            c.cell_id,
            text(&c.manufacturer),
            text(&c.model),
            text(&c.chemistry),
            text(&c.form_factor),
            num(c.nominal_capacity_ah),
            num(c.nominal_voltage_v),
            utc(c.first_test_unix_s)
        )?;
    }
    Ok(())
}

/// The test table `cyclerhub tests` prints, whatever it read the tests from.
fn print_tests(out: &mut impl std::io::Write, tests: &[TestSummary]) -> Result<()> {
    writeln!(
        out,
        "{:<36}  {:<14}  {:<14}  {:<24}  {:<9}  {:>10}  START (UTC)",
        "TEST ID", "LAB", "CHANNEL", "PROTOCOL", "STATE", "SAMPLES"
    )?;
    for t in tests {
        writeln!(
            out,
            "{:<36}  {:<14}  {:<14}  {:<24}  {:<9}  {:>10}  {}",
            t.test_id,
            if t.lab.is_empty() { "-" } else { &t.lab },
            t.channel_id,
            t.protocol_name,
            t.state,
            t.sample_count,
            utc(t.start_unix_s)
        )?;
    }
    Ok(())
}

/// `cyclerhub samples`: the test's samples in the window as CSV on standard output.
fn samples(
    from: &ReadFrom,
    test_id: &str,
    columns: &[String],
    window: (f64, f64),
    follow: bool,
) -> Result<()> {
    let cols = Columns::parse(columns).map_err(anyhow::Error::msg)?;
    crate::query::check_window(window.0, window.1).map_err(anyhow::Error::msg)?;
    let reader = from.open()?;
    if let Reader::Db(store) = &reader
        && store.test(test_id)?.is_none()
    {
        bail!(
            "{}; `cyclerhub tests --db {}` lists the test ids",
            StoreError::NoSuchTest(test_id.to_owned()),
            store.path().display()
        );
    }
    let stdout = std::io::stdout();
    let mut csv = CsvWriter::new(&cols, std::io::BufWriter::new(stdout.lock()));
    match reader {
        Reader::Db(store) => {
            let mut failed = None;
            crate::query::read_batches(
                &store,
                test_id,
                &cols,
                (0, u64::MAX),
                window,
                |b| match csv.batch(&b) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Reader::Hub(mut hub) if follow => hub.tail(test_id, |b| {
            csv.batch(b)?;
            csv.flush()
        })?,
        Reader::Hub(mut hub) => hub.read_samples(test_id, &cols, window, |b| csv.batch(b))?,
    }
    csv.finish()?;
    Ok(())
}

/// `anonymise` is `Some(salt file, if any)` with `--anonymise`.
fn export(
    db: String,
    test_id: &str,
    format: Format,
    output: Option<PathBuf>,
    anonymise: Option<Option<PathBuf>>,
) -> Result<()> {
    // Arguments first: a refused command touches neither the database nor the output.
    let pseudonymiser = anonymise.map(pseudonymiser).transpose()?;
    match (&output, format, &pseudonymiser) {
        (Some(_), _, _) | (None, Format::BdfCsv, None) => {}
        (None, Format::BdfCsv, Some(_)) => bail!(
            "--anonymise applies to the metadata JSON, which is written beside an output file: \
             give -o FILE"
        ),
        (None, _, _) => bail!(
            "--format {} writes files: give -o {}",
            format.name(),
            if format == Format::BatteryArchive {
                "PREFIX"
            } else {
                "FILE"
            }
        ),
    }
    let store = open(&db, true)?;
    // Check first, so a typo does not leave an empty output file behind.
    if store.test(test_id)?.is_none() {
        bail!(
            "{}; `cyclerhub tests --db {}` lists the test ids",
            StoreError::NoSuchTest(test_id.to_owned()),
            store.path().display()
        );
    }
    let Some(output) = output else {
        return match crate::export::write_bdf_csv(&store, test_id, std::io::stdout().lock()) {
            Ok(_) => Ok(()),
            // A closed pipe (`| head`) is not an error worth a message.
            Err(ExportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e).with_context(|| format!("exporting test {test_id}")),
        };
    };
    let exported =
        crate::export::export_files(&store, test_id, format, &output, pseudonymiser.as_ref())
            .with_context(|| format!("exporting test {test_id}"))?;
    let files: Vec<String> = exported
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    eprintln!(
        "wrote {} samples of {test_id}{} to {}",
        exported.samples,
        if pseudonymiser.is_some() {
            " (anonymised)"
        } else {
            ""
        },
        files.join(", ")
    );
    Ok(())
}

/// The pseudonymiser keyed with the lab secret in `salt`; refuses to go without one.
fn pseudonymiser(salt: Option<PathBuf>) -> Result<Pseudonymiser> {
    let Some(salt) = salt else {
        bail!(
            "--anonymise needs the lab's secret: --salt FILE (or CYCLERHUB_SALT_FILE). Without \
             one, a pseudonym would be a plain hash of the cell id that anyone can reverse by \
             hashing candidate ids. Create it once, keep it private and reuse it: \
             head -c 32 /dev/urandom | base64 > lab-secret"
        );
    };
    let secret = std::fs::read(&salt)
        .with_context(|| format!("cannot read the salt file {}", salt.display()))?;
    Pseudonymiser::new(&secret).map_err(|e| anyhow!("salt file {}: {e}", salt.display()))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from Unix seconds; `?` when not finite.
fn utc(unix_s: f64) -> String {
    Utc::from_unix_s(unix_s).map_or_else(|| "?".into(), |t| t.seconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tests_and_samples_read_from_exactly_one_of_a_database_and_a_hub() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
        for ok in [
            &["tests", "--db", "hub.sqlite"][..],
            &["tests", "--hub", "https://hub:50051", "--ca-file", "ca.pem"],
            &[
                "samples",
                "--hub",
                "http://hub:50051",
                "--token-file",
                "t",
                "ID",
            ],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for refused in [
            &["tests"][..],
            &["tests", "--db", "hub.sqlite", "--hub", "http://hub:50051"],
            &["tests", "--db", "hub.sqlite", "--ca-file", "ca.pem"],
            &["samples", "--db", "hub.sqlite", "--token-file", "t", "ID"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }
}
