//! Test support (feature `testing`): a throwaway PostgreSQL cluster for the hub's tests and
//! benches and for the end-to-end tests.
//!
//! [`PgCluster`] runs `initdb` in a temporary directory and starts a server there with `pg_ctl`,
//! listening only on a unix socket in that same directory (no TCP port to collide on) with trust
//! authentication; dropping it stops the server (`pg_ctl stop -m immediate`) and removes the
//! directory, so no server outlives its tests. The binaries come from the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `.ci/run` installs it).
//! `initdb` refuses to run as root: as root, the server runs as the `postgres` user.
//!
//! [`PgCluster::start_tls`] starts one that also listens on TCP 127.0.0.1 (a free port) with
//! `ssl = on`, as a lab's server on another machine would: its certificate is signed by a test
//! CA ([`PgCluster::ca_file`]), and its `pg_hba.conf` accepts TCP only over TLS.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Where Debian installs each PostgreSQL major version (`15/bin`, `16/bin`, ...).
const PG_LIB: &str = "/usr/lib/postgresql";
/// The port of a cluster without TCP: it only names the socket file (`.s.PGSQL.5432`).
const SOCKET_PORT: u16 = 5432;
/// Checkpoints after 256 MB of WAL rather than the default 1 GB: a temporary directory
/// should not grow by a gigabyte of WAL.
const SMALL_WAL: &str = "-c max_wal_size=256MB -c min_wal_size=32MB";
/// The superuser initdb creates; trust authentication lets anyone on the socket be it.
const SUPERUSER: &str = "postgres";
/// A TLS cluster's `pg_hba.conf`: the socket as before; TCP only over TLS, so that a plaintext
/// client is refused as by a lab's server that requires TLS.
const TLS_HBA: &str = "\
local     all all              trust
hostssl   all all 127.0.0.1/32 trust
hostnossl all all all          reject
";

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
    /// The server's port: the socket file's name, and its TCP port when it has one.
    port: u16,
    /// The test CA that signed the server's certificate (PEM), when it listens on TCP with TLS.
    ca_file: Option<PathBuf>,
    /// Numbers the databases [`PgCluster::create_database`] hands out.
    next_db: AtomicU32,
}

/// The cluster [`PgCluster::shared`] hands out, while anyone holds it.
static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
/// The cluster [`PgCluster::shared_tls`] hands out, while anyone holds it.
static SHARED_TLS: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

impl PgCluster {
    /// Starts a cluster for tests: `fsync` off, as its data need not survive a power cut.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or a program fails; the message says which and why.
    pub fn start() -> PgCluster {
        PgCluster::start_with(&format!("-c fsync=off {SMALL_WAL}"), false)
    }

    /// Starts a cluster for tests, as [`PgCluster::start`], that also listens on TCP 127.0.0.1
    /// at a free port with TLS on and plaintext TCP refused. Its certificate names `localhost`
    /// and `127.0.0.1`, signed by the CA in [`PgCluster::ca_file`]; connect with
    /// [`PgCluster::tcp_url`].
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn start_tls() -> PgCluster {
        PgCluster::start_with(&format!("-c fsync=off {SMALL_WAL}"), true)
    }

    /// Starts a cluster with the server's default (durable) settings, as a lab's server runs,
    /// but for a smaller WAL: for benchmarks.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn start_durable() -> PgCluster {
        PgCluster::start_with(SMALL_WAL, false)
    }

    /// The cluster shared by every caller that holds it: started by the first, stopped when the
    /// last one drops it. Tests take a fresh database each ([`PgCluster::create_database`]), so
    /// a test binary initialises one cluster rather than one per test.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn shared() -> Arc<PgCluster> {
        shared(&SHARED, PgCluster::start)
    }

    /// As [`PgCluster::shared`], for the cluster of [`PgCluster::start_tls`].
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn shared_tls() -> Arc<PgCluster> {
        shared(&SHARED_TLS, PgCluster::start_tls)
    }

    /// Starts a primary for [`PgCluster::standby`]: as [`PgCluster::start`], with every standby
    /// synchronous (`synchronous_standby_names = '*'`) for the databases of
    /// [`PgCluster::create_replicated_database`]; the others commit locally.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn start_primary() -> PgCluster {
        PgCluster::start_with(
            &format!(
                "-c fsync=off {SMALL_WAL} -c synchronous_standby_names='*' \
                 -c synchronous_commit=local"
            ),
            false,
        )
    }

    /// Creates a database (returning its name) whose commits wait until the standby has
    /// replayed them (`synchronous_commit = remote_apply`): once a hub acknowledged an entry,
    /// a query on the standby sees it. Create it before [`PgCluster::standby`], which copies it;
    /// on a cluster from [`PgCluster::start_primary`].
    ///
    /// # Panics
    /// When `createdb` or `psql` fails.
    pub fn create_replicated_database(&self) -> String {
        let name = self.create_named_database();
        run(self
            .command("psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", &name])
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "ALTER DATABASE {name} SET synchronous_commit = remote_apply"
            )));
        name
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), serving read-only queries
    /// on its own socket; its databases have this cluster's names ([`PgCluster::url`]).
    ///
    /// # Panics
    /// When a program fails.
    pub fn standby(&self) -> PgCluster {
        let mut standby = PgCluster::empty(SOCKET_PORT);
        let data = standby.data();
        run(standby
            .command("pg_basebackup")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-D"])
            .arg(&data)
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]));
        standby.next_db = AtomicU32::new(self.next_db.load(Ordering::Relaxed));
        standby.start_server(&format!("-c listen_addresses='' -c fsync=off {SMALL_WAL}"));
        standby
    }

    /// A cluster's temporary directory (owned by [`PgCluster::run_as`]), no server yet.
    fn empty(port: u16) -> PgCluster {
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
            port,
            ca_file: None,
            next_db: AtomicU32::new(0),
        };
        if let Some(user) = run_as {
            run(Command::new("chown")
                .arg(format!("{user}:"))
                .arg(cluster.dir.path()));
        }
        cluster
    }

    /// `pg_ctl start` on the data directory with `options` (and the socket in the directory).
    fn start_server(&self, options: &str) {
        let options = format!(
            "{options} -k {} -p {}",
            self.dir.path().display(),
            self.port
        );
        let log = self.dir.path().join("server.log");
        if let Err(e) = try_run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-o", &options, "start"]),
        ) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{e}\nserver log:\n{log}");
        }
    }

    /// `tls`: listen on TCP too, with TLS only (see [`PgCluster::start_tls`]).
    fn start_with(settings: &str, tls: bool) -> PgCluster {
        let port = match tls {
            // Free now and the server's moments later; should another process take it in
            // between, `pg_ctl start` fails and the panic shows the server log saying so.
            true => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap_or_else(|e| panic!("cannot find a free TCP port: {e}"))
                .port(),
            false => SOCKET_PORT,
        };
        let mut cluster = PgCluster::empty(port);
        let data = cluster.data();
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"));
        let listen = match tls {
            true => {
                cluster.ca_file = Some(cluster.write_tls_files());
                std::fs::write(data.join("pg_hba.conf"), TLS_HBA)
                    .unwrap_or_else(|e| panic!("cannot write pg_hba.conf: {e}"));
                let dir = cluster.dir.path().display();
                format!(
                    "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={dir}/server.crt \
                     -c ssl_key_file={dir}/server.key"
                )
            }
            false => "-c listen_addresses=''".to_owned(),
        };
        cluster.start_server(&format!("{listen} {settings}"));
        cluster
    }

    /// Creates an empty database and returns its URL, for `HubStore::connect` or `cyclerhub
    /// serve --db`.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_database(&self) -> String {
        self.url(&self.create_named_database())
    }

    /// Creates an empty database and returns its name, for [`PgCluster::url`] or
    /// [`PgCluster::tcp_url`].
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_named_database(&self) -> String {
        let name = format!("hub{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        run(self
            .command("createdb")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, &name]));
        name
    }

    /// The URL of database `name` over TCP, with `params` (e.g. `sslmode=verify-full`) added.
    /// `host` is the name the server's certificate is checked against (it names `localhost`
    /// and `127.0.0.1`); the connection goes to 127.0.0.1 whatever it is (`hostaddr`).
    ///
    /// # Panics
    /// When the cluster has no TCP listener (not started with [`PgCluster::start_tls`]).
    pub fn tcp_url(&self, host: &str, name: &str, params: &str) -> String {
        assert!(
            self.ca_file.is_some(),
            "this cluster listens on a unix socket only; start it with PgCluster::start_tls"
        );
        let port = self.port;
        format!("postgres://{SUPERUSER}@{host}:{port}/{name}?hostaddr=127.0.0.1&{params}")
    }

    /// The PEM file of the test CA that signed the server's certificate, for `sslrootcert`.
    ///
    /// # Panics
    /// When the cluster has no TLS (not started with [`PgCluster::start_tls`]).
    pub fn ca_file(&self) -> &Path {
        self.ca_file
            .as_deref()
            .expect("this cluster has no TLS; start it with PgCluster::start_tls")
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
        format!("postgres://{SUPERUSER}@{host}:{}/{name}", self.port)
    }

    /// Writes a test CA (`ca.pem`, returned) and the server's certificate and key it signed
    /// (`server.crt`, `server.key`) into the cluster's directory. PostgreSQL refuses a key that
    /// others can read or that the server's user does not own: 0600, owned by [`run_as`].
    ///
    /// [`run_as`]: PgCluster::run_as
    fn write_tls_files(&self) -> PathBuf {
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(tls_failed);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cyclerhub test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(tls_failed);
        let ca = ca_params.self_signed(&ca_key).unwrap_or_else(tls_failed);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap_or_else(tls_failed);
        let cert = rcgen::CertificateParams::new(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .and_then(|p| p.signed_by(&key, &issuer))
            .unwrap_or_else(tls_failed);

        let dir = self.dir.path();
        let ca_file = dir.join("ca.pem");
        let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
        let written = std::fs::write(&ca_file, ca.pem())
            .and_then(|()| std::fs::write(&cert_file, cert.pem()))
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_file)?
                    .write_all(key.serialize_pem().as_bytes())
            });
        written.unwrap_or_else(tls_failed);
        if let Some(user) = self.run_as {
            run(Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&cert_file)
                .arg(&key_file));
        }
        ca_file
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

/// Panics for a failure to make or write the test certificates.
fn tls_failed<T>(e: impl std::fmt::Display) -> T {
    panic!("cannot make the test certificates: {e}")
}

/// The cluster in `slot` while anyone holds it, else a new one from `start`.
fn shared(slot: &Mutex<Weak<PgCluster>>, start: fn() -> PgCluster) -> Arc<PgCluster> {
    let mut shared = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(start());
    *shared = Arc::downgrade(&cluster);
    cluster
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
