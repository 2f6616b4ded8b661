//! The `cyclerhub` command line: serve the lab hub, list its tests, export a test. A library
//! module so that tests can run the real binary's code as a child process (and kill it).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::export::ExportError;
use crate::store::{HubStore, StoreError};
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

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
        /// (`postgres://USER@HOST/DB`; the database must exist). Migrations run on start.
        #[arg(long)]
        db: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// List the tests in the hub, one per line.
    Tests {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
    },
    /// Export one test's samples.
    Export {
        /// Hub database: a SQLite file or a `postgres://` URL.
        #[arg(long)]
        db: String,
        /// The test to export (see `cyclerhub tests --db FILE`).
        test_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::BdfCsv)]
        format: Format,
        /// Output file; standard output when absent.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Battery Data Format CSV.
    BdfCsv,
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
        Command::Serve { db, listen } => serve(db, listen),
        Command::Tests { db } => list_tests(db),
        Command::Export {
            db,
            test_id,
            format: Format::BdfCsv,
            output,
        } => export(db, &test_id, output),
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

fn serve(db: String, listen: SocketAddr) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
        crate::server::run(listener, store, shutdown).await
    })
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

fn list_tests(db: String) -> Result<()> {
    let store = open(&db, true)?;
    let tests = store.list_tests()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if tests.is_empty() {
        eprintln!("no tests in {} yet", store.path().display());
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<14}  {:<24}  {:<9}  {:>10}  START (UTC)",
        "TEST ID", "CHANNEL", "PROTOCOL", "STATE", "SAMPLES"
    )?;
    for t in tests {
        writeln!(
            out,
            "{:<36}  {:<14}  {:<24}  {:<9}  {:>10}  {}",
            t.test_id,
            t.channel_id,
            t.protocol_name,
            t.state(),
            t.sample_count,
            utc(t.start_unix_s)
        )?;
    }
    Ok(())
}

fn export(db: String, test_id: &str, output: Option<PathBuf>) -> Result<()> {
    let store = open(&db, true)?;
    // Check first, so a typo does not leave an empty output file behind.
    if store.test(test_id)?.is_none() {
        bail!(
            "{}; `cyclerhub tests --db {}` lists the test ids",
            StoreError::NoSuchTest(test_id.to_owned()),
            store.path().display()
        );
    }
    let result = match &output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            crate::export::write_bdf_csv(&store, test_id, file)
        }
        None => crate::export::write_bdf_csv(&store, test_id, std::io::stdout().lock()),
    };
    match result {
        Ok(rows) => {
            if let Some(path) = output {
                eprintln!("wrote {rows} samples of {test_id} to {}", path.display());
            }
            Ok(())
        }
        // A closed pipe (`| head`) is not an error worth a message.
        Err(ExportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).with_context(|| format!("exporting test {test_id}")),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from Unix seconds (civil-from-days, no time-zone database).
fn utc(unix_s: f64) -> String {
    if !unix_s.is_finite() {
        return "?".into();
    }
    let secs = unix_s.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_827_696.5), "2000-02-29 12:34:56");
        assert_eq!(utc(1_735_689_599.0), "2024-12-31 23:59:59");
    }
}
