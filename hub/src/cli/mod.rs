//! The `cyclerhub` command line: serve the lab hub, issue its tokens, list its tests and read
//! their samples (from the database, or from a running hub with `--hub`), export a test. A
//! library module so that tests can run the real binary's code as a child process (and kill it).
//!
//! This file holds the commands, their arguments and the dispatch; `serve`, `admin` (setup,
//! tokens, schemas, labs) and `read` (tests, samples, cycles, exports) do the work.

mod admin;
mod exports;
mod publish;
mod read;
mod serve;
mod share;

pub(crate) use read::pseudonymiser_from;
pub use serve::shutdown_signal;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::export::Format;
use crate::query::TestFilter;
use crate::remote::Remote;
use crate::store::HubStore;
use crate::utc::Utc;
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

/// The cyclerd lab hub: receives daemons' upload streams, stores tests, exports them.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How `serve` writes its log to stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line). Under journald each line starts with its syslog priority.
    #[arg(long, global = true, default_value_t = cyclerd_proto::logs::LogFormat::Text)]
    log_format: cyclerd_proto::logs::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the hub until Ctrl-C: daemons' uploads, queries (gRPC, and the HTTP API with
    /// --http) and the web app, plus gRPC health and reflection.
    Serve {
        /// Hub database: a SQLite file (created if missing) or a PostgreSQL URL
        /// (`postgres://USER@HOST/DB`; the database must exist). Migrations run on start. TLS to
        /// PostgreSQL as with libpq: `?sslmode=verify-full&sslrootcert=CA.pem` (also `disable`,
        /// `prefer`, the default, `require`, `verify-ca`).
        #[arg(long)]
        db: String,
        /// Serve queries from this PostgreSQL database instead, a streaming replica of --db
        /// (same URL syntax); uploads, tokens and migrations stay on --db.
        #[arg(long)]
        read_db: Option<String>,
        /// Address of the gRPC services (uploads, queries, health) to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Address of the HTTP API (`/api/v1`, OpenAPI at `/api/v1/openapi.json`) and the web
        /// app, served with the same TLS and token rules as gRPC.
        #[arg(long, default_value = "127.0.0.1:8621", conflicts_with = "no_http")]
        http: SocketAddr,
        /// Serve no HTTP API and no web app (gRPC only).
        #[arg(long)]
        no_http: bool,
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
        /// Connections open at once (default 512, at most half the open-file limit); at the cap
        /// a newcomer closes the oldest connection that has sent nothing yet, or waits.
        #[arg(long)]
        max_connections: Option<usize>,
        /// Lab-wide alert rules: a TOML file with the daemon's `[alerts]` section (rules
        /// test_ended, test_faulted, capacity_retention, daemon_offline; `[alerts.webhook]`,
        /// `[alerts.email]`). Raised alerts wait in `alerts.store_path` (default: alerts.sqlite
        /// beside a SQLite --db). Give it to one hub process of several.
        #[arg(long)]
        alerts: Option<PathBuf>,
        /// Thresholds of the hub's own quality checks of the samples it stores: a TOML file of
        /// threshold keys (docs/quality.md; the defaults for those left out) and `[lab.NAME]`
        /// tables overriding some of them for a lab's tests.
        #[arg(long, value_name = "FILE")]
        quality: Option<PathBuf>,
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
    /// Share a chosen subset of this hub's tests with another hub (`share add|list|remove`),
    /// continuously or once, optionally anonymised; `serve` sends them.
    Share {
        #[command(subcommand)]
        action: share::ShareAction,
    },
    /// Register, show and remove a lab's JSON Schemas for secondary and tertiary metadata.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// List the labs, with their teams, daemons, tokens and metadata schemas (with --hub: the
    /// labs whose tests you may read, from their tests, without tokens).
    Labs {
        #[command(flatten)]
        source: ReadFrom,
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
    /// Let a daemon bind a new credential: for a daemon whose store was recreated (a new disk, a
    /// deleted outbox), which the hub otherwise refuses as someone else using its id. Only for a
    /// daemon you trust: its next Hello binds whatever credential it presents.
    Rebind {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The daemon's id (as the refusal in the hub's log names it).
        #[arg(long)]
        daemon: String,
    },
    /// List the tests in the hub, one per line.
    Tests {
        #[command(flatten)]
        source: ReadFrom,
        #[command(flatten)]
        filters: Filters,
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
        /// The test: its id, or enough of its start to name one test (see `cyclerhub tests`).
        test_id: String,
    },
    /// Print a test's samples as CSV (seq and the chosen columns).
    Samples {
        #[command(flatten)]
        source: ReadFrom,
        /// The test: its id, or enough of its start to name one test (see `cyclerhub tests`).
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
    /// Print a test's per-cycle results: duration, charge and discharge, coulombic and energy
    /// efficiency, mean voltages, highest temperature, capacity retention (against the first
    /// full cycle) and DC internal resistance; blank where a cycle has no such value.
    Cycles {
        #[command(flatten)]
        source: ReadFrom,
        /// The test: its id, or enough of its start to name one test (see `cyclerhub tests`).
        test_id: String,
        /// Print CSV instead of the table: the columns of the per-cycle file written beside a
        /// BDF export (SI units, ratios as fractions).
        #[arg(long)]
        csv: bool,
    },
    /// Export a test, or every test the filters match: BDF CSV or Parquet, or Battery Archive
    /// CSV, with a metadata JSON beside; from the database or, with --hub, from a running hub
    /// (the same files, byte for byte).
    Export {
        #[command(flatten)]
        source: ReadFrom,
        /// The test to export: its id, or enough of its start to name one test (see `cyclerhub
        /// tests`). Without it, every test the filters match goes into the folder -o, one file
        /// set per test, named as BDF names files: LAB__CELL__YYYYMMDD_NNN (the lab, the cell
        /// id, the start date in UTC and the test's number among that cell's tests of that day,
        /// from 001).
        #[arg(conflicts_with = "Filters")]
        test_id: Option<String>,
        #[command(flatten)]
        filters: Filters,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::BdfCsv)]
        format: Format,
        /// Output file (BDF: named to end .bdf.csv or .bdf.parquet, the suffixes BDF's validator
        /// accepts; `run.csv` is written as `run.bdf.csv`), or file-name prefix (Battery Archive:
        /// PREFIX_timeseries.csv and PREFIX_cycle_data.csv); the metadata JSON goes beside it
        /// (FILE.metadata.json, PREFIX.metadata.json), and beside a BDF file its per-cycle table
        /// (NAME.cycles.csv or NAME.cycles.parquet). When absent, BDF CSV goes to standard
        /// output, without metadata or per-cycle table. Without a test id: the folder every
        /// test's files go into. Missing folders are created (private to you).
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
    /// Publish tests for a public archive, in one folder: per test its BDF files (CSV or
    /// Parquet, with the per-cycle table), its Battery Archive files and their metadata JSON,
    /// plus a README.txt and ro-crate-metadata.json (RO-Crate 1.1: every file with its size and
    /// SHA-256, per test its cell, chemistry, nominal capacity, protocol, instruments, start and
    /// end). The folder appears only once complete.
    Publish(publish::PublishArgs),
}

/// Which tests `tests` lists, `export` exports and `publish` publishes; an absent filter matches
/// every test.
#[derive(Args, Default)]
struct Filters {
    /// Only tests of this cell (`cell_id`).
    #[arg(long, default_value = "")]
    cell: String,
    /// Only tests of this chemistry.
    #[arg(long, default_value = "")]
    chemistry: String,
    /// Only tests in this state; `ended`: finished, stopped or faulted.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::query::STATES))]
    state: Option<String>,
    /// Only tests of this daemon.
    #[arg(long, default_value = "")]
    daemon: String,
    /// Only tests of this lab's daemons.
    #[arg(long, default_value = "")]
    lab: String,
    /// Only tests of this team (metadata `team`).
    #[arg(long, default_value = "")]
    team: String,
    /// Only tests started at or after this time: a date (2026-12-01, its midnight UTC), an RFC
    /// 3339 time (2026-12-01T08:30:00Z, or with an offset: +01:00) or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = time_value)]
    since: Option<f64>,
    /// Only tests started before this time (same forms as --since; a date is its midnight, so
    /// `--since 2026-12-01 --until 2026-12-02` is the 1st of December).
    #[arg(long, value_name = "TIME", value_parser = time_value)]
    until: Option<f64>,
    /// Only tests graded this letter or better (A best, to E; docs/quality.md).
    #[arg(long, value_name = "LETTER", value_parser = grade_value)]
    min_grade: Option<String>,
}

/// A grade letter as `--min-grade` takes it.
fn grade_value(text: &str) -> Result<String, String> {
    cyclerd_proto::quality::grade::parse_letter(text).map(String::from)
}

impl Filters {
    fn into_filter(self) -> TestFilter {
        TestFilter {
            lab: self.lab,
            team: self.team,
            daemon_id: self.daemon,
            cell_id: self.cell,
            chemistry: self.chemistry,
            state: self.state.unwrap_or_default(),
            started_after_unix_s: self.since.unwrap_or(0.0),
            started_before_unix_s: self.until.unwrap_or(0.0),
            min_grade: self.min_grade.unwrap_or_default(),
        }
    }
}

/// `--since` and `--until`.
fn time_value(text: &str) -> Result<f64, String> {
    crate::utc::parse_time(text)
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
        /// The token's name (see `cyclerhub token list`).
        name: String,
    },
    /// List the tokens (never their secrets).
    List {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
    },
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
    let log_format = cli.log_format;
    match cli.command {
        Command::Setup {
            db,
            dir,
            lab,
            hosts,
            daemons,
            readers,
        } => admin::setup(&db, &dir, &lab, &hosts, (&daemons, &readers)),
        Command::Serve {
            db,
            read_db,
            listen,
            http,
            no_http,
            tls_cert,
            tls_key,
            require_tokens,
            insecure,
            max_upload_streams,
            max_bytes_in_flight,
            max_connections,
            alerts,
            quality,
        } => {
            let limits = serve::Limits {
                max_upload_streams: max_upload_streams.max(1),
                max_bytes_in_flight: max_bytes_in_flight.max(1024),
                max_connections,
                alerts,
                quality,
            };
            serve::serve(
                (db, read_db),
                (listen, (!no_http).then_some(http)),
                tls_cert.zip(tls_key),
                require_tokens,
                insecure,
                (limits, log_format),
            )
        }
        Command::Token { action } => admin::token(action),
        Command::Schema { action } => admin::schema(action),
        Command::Share { action } => share::share(action),
        Command::Labs { source } => match source.open()? {
            Reader::Db(store) => admin::labs(&store),
            Reader::Hub(mut hub) => read::labs(&mut hub),
        },
        Command::Assign { db, daemon, lab } => {
            let before = open(&db, true)?.assign_daemon(&daemon, &lab)?;
            let moved = match before {
                Some(before) if before != lab => format!(" (moved from lab {before:?})"),
                _ => String::new(),
            };
            eprintln!("daemon {daemon} and its tests belong to lab {lab:?}{moved}");
            Ok(())
        }
        Command::Rebind { db, daemon } => {
            if open(&db, true)?.forget_daemon_credential(&daemon)? {
                eprintln!(
                    "daemon {daemon} binds a new credential at its next upload (restart it, or \
                     wait for its next reconnect)"
                );
                Ok(())
            } else {
                anyhow::bail!("daemon {daemon:?} has no credential bound at this hub")
            }
        }
        Command::Cells { source, lab } => {
            let cells = match source.open()? {
                Reader::Db(store) => crate::query::cells_of(&store, &lab)?
                    .iter()
                    .map(crate::query::cell)
                    .collect(),
                Reader::Hub(mut hub) => hub.list_cells(&lab)?,
            };
            read::print_cells(&mut std::io::stdout().lock(), &cells)
        }
        Command::Tests { source, filters } => read::list_tests(&source, filters.into_filter()),
        Command::Show { source, test_id } => read::show(&source, &test_id),
        Command::Samples {
            source,
            test_id,
            columns,
            from,
            to,
            follow,
        } => read::samples(&source, &test_id, &columns, (from, to), follow),
        Command::Cycles {
            source,
            test_id,
            csv,
        } => read::cycles(&source, &test_id, csv),
        Command::Export {
            source,
            test_id,
            filters,
            format,
            output,
            anonymise,
            salt,
        } => {
            let anonymise = anonymise.then_some(salt);
            match test_id {
                Some(id) => exports::export(&source, &id, format, output, anonymise),
                None => {
                    exports::export_all(&source, &filters.into_filter(), format, output, anonymise)
                }
            }
        }
        Command::Publish(args) => publish::publish(args),
    }
}

/// Opens the hub database `db` (a file or a URL). `must_exist`: a missing SQLite file is an
/// error rather than a new empty hub (a PostgreSQL database must exist anyway).
fn open(db: &str, must_exist: bool) -> Result<HubStore> {
    if !crate::store::is_postgres_url(db)
        && let Some(folder) = Path::new(db).parent()
        && !folder.as_os_str().is_empty()
        && !folder.is_dir()
    {
        bail!(
            "the folder {} of the hub database {db} does not exist: create it (mkdir -p {}) or \
             give --db a file in a folder that exists",
            folder.display(),
            folder.display()
        );
    }
    if must_exist && !crate::store::is_postgres_url(db) && !Path::new(db).exists() {
        bail!("hub database {db} does not exist; `cyclerhub serve --db {db}` creates it");
    }
    Ok(HubStore::connect(db)?)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from Unix seconds; `?` when not finite.
fn utc(unix_s: f64) -> String {
    Utc::from_unix_s(unix_s).map_or_else(|| "?".into(), |t| t.seconds())
}

#[cfg(test)]
mod tests;
