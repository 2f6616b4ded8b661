//! Test support (feature `testing`): a throwaway PostgreSQL cluster for the hub's tests and
//! benches and for the end-to-end tests.
//!
//! [`PgCluster`] runs `initdb` in a temporary directory and starts a server there with `pg_ctl`,
//! listening only on a unix socket in that same directory (no TCP port to collide on) with trust
//! authentication; dropping it stops the server (`pg_ctl stop -m immediate`) and removes the
//! directory, so no server outlives its tests. The binaries come from the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `.ci/run` installs it).
//! `initdb` refuses to run as root: as root, the server runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Where Debian installs each PostgreSQL major version (`15/bin`, `16/bin`, ...).
const PG_LIB: &str = "/usr/lib/postgresql";
/// The port names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;
/// Checkpoints after 256 MB of WAL rather than the default 1 GB: a temporary directory
/// should not grow by a gigabyte of WAL.
const SMALL_WAL: &str = "-c max_wal_size=256MB -c min_wal_size=32MB";
/// The superuser initdb creates; trust authentication lets anyone on the socket be it.
const SUPERUSER: &str = "postgres";

/// A running throwaway cluster. See the module documentation.
pub struct PgCluster {
    /// Holds the data directory, the socket and the server log; removed after the server
    /// stopped (fields drop after [`Drop::drop`]).
    dir: tempfile::TempDir,
    /// The PostgreSQL `bin` folder (`initdb`, `pg_ctl`, `createdb`).
    bin: PathBuf,
    /// Who runs the PostgreSQL programs: the `postgres` user when we are root, since initdb
    /// refuses root; `None` for ourselves.
    run_as: Option<&'static str>,
    /// Numbers the databases [`PgCluster::create_database`] hands out.
    next_db: AtomicU32,
}

/// The cluster [`PgCluster::shared`] hands out, while anyone holds it.
static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

impl PgCluster {
    /// Starts a cluster for tests: `fsync` off, as its data need not survive a power cut.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or a program fails; the message says which and why.
    pub fn start() -> PgCluster {
        PgCluster::start_with(&format!("-c fsync=off {SMALL_WAL}"))
    }

    /// Starts a cluster with the server's default (durable) settings, as a lab's server runs,
    /// but for a smaller WAL: for benchmarks.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn start_durable() -> PgCluster {
        PgCluster::start_with(SMALL_WAL)
    }

    /// The cluster shared by every caller that holds it: started by the first, stopped when the
    /// last one drops it. Tests take a fresh database each ([`PgCluster::create_database`]), so
    /// a test binary initialises one cluster rather than one per test.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn shared() -> Arc<PgCluster> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(PgCluster::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    fn start_with(settings: &str) -> PgCluster {
        let bin = pg_bin();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = (unsafe { libc::geteuid() } == 0).then_some(SUPERUSER);
        let dir = tempfile::Builder::new()
            .prefix("cyclerhub-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for PostgreSQL: {e}"));
        let cluster = PgCluster {
            dir,
            bin,
            run_as,
            next_db: AtomicU32::new(0),
        };
        if let Some(user) = run_as {
            run(Command::new("chown")
                .arg(format!("{user}:"))
                .arg(cluster.dir.path()));
        }
        let data = cluster.data();
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"));
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT} {settings}",
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("server.log");
        if let Err(e) = try_run(
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-o", &options, "start"]),
        ) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{e}\nserver log:\n{log}");
        }
        cluster
    }

    /// Creates an empty database and returns its URL, for `HubStore::connect` or `cyclerhub
    /// serve --db`.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_database(&self) -> String {
        let name = format!("hub{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        run(self
            .command("createdb")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-U", SUPERUSER, &name]));
        self.url(&name)
    }

    /// The URL of database `name` on this cluster (the socket directory as the host).
    pub fn url(&self, name: &str) -> String {
        let host: String = self
            .dir
            .path()
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("postgres://{SUPERUSER}@{host}:{PORT}/{name}")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL program, run as [`PgCluster::run_as`].
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        match stopped {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "pg_ctl stop failed ({}): {}; a PostgreSQL server may still run on {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.data().display()
            ),
            Err(e) => eprintln!("cannot run pg_ctl stop: {e}"),
        }
    }
}

/// The newest installed PostgreSQL's `bin` folder.
fn pg_bin() -> PathBuf {
    let newest = std::fs::read_dir(PG_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server found ({PG_LIB}/*/bin/initdb); install it with \
             `apt-get install postgresql` (.ci/run does)"
        ),
    }
}

/// Runs `cmd` to completion; panics with its output when it fails.
fn run(cmd: &mut Command) {
    if let Err(e) = try_run(cmd) {
        panic!("{e}");
    }
}

/// Runs `cmd` to completion; its output when it fails.
fn try_run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program(cmd)))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed ({}):\n{}{}",
        program(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `cmd`'s program and arguments, for messages.
fn program(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| Path::new(a).display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
