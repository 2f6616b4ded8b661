//! `cyclerctl`: talks to a running cyclerd over its control API.

use clap::{Args, Parser, Subcommand};
use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::*;
use cyclerd::simulate;
use cyclerd_cli::view;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_protocols::compile::Target;
use cyclerd_protocols::import::{self, SourceKind};
use cyclerd_protocols::{Plan, PlanStep};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

#[derive(Parser)]
#[command(
    name = "cyclerctl",
    version,
    about = "cyclerctl: control a running cyclerd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the daemon's control API is when none is said.
const DEFAULT_CONTROL: &str = "http://127.0.0.1:50052";

/// How to reach the daemon, for the commands that talk to one.
#[derive(Args)]
struct DaemonArgs {
    /// The daemon's control address, http://HOST:PORT or https://HOST:PORT [default:
    /// http://127.0.0.1:50052, or the one --config says].
    #[arg(long, global = true, env = "CYCLERD_CONTROL", value_name = "URL")]
    daemon: Option<String>,
    /// The daemon's lab configuration (TOML), to find it without --daemon: its `[control]
    /// listen` address (loopback for an unspecified one), https:// when it serves TLS.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The control token (`cyclerd token issue`), needed where the daemon requires one; better
    /// given in CYCLERD_TOKEN than on the command line, which other users can see.
    #[arg(long, global = true, env = "CYCLERD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA (PEM) that signed the daemon's certificate, for an https:// --daemon.
    #[arg(long, global = true, env = "CYCLERD_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl DaemonArgs {
    /// The control address: --daemon (or CYCLERD_CONTROL), else the one --config gives, else
    /// the default.
    fn address(&self) -> anyhow::Result<String> {
        if let Some(address) = &self.daemon {
            return Ok(address.clone());
        }
        let Some(path) = &self.config else {
            return Ok(DEFAULT_CONTROL.to_owned());
        };
        let config = cyclerd::config::Config::read(path)?;
        Ok(control_address(&config.control))
    }
}

/// The URL a client on this machine reaches the control API `control` at.
fn control_address(control: &cyclerd::config::ControlSection) -> String {
    let mut listen = control.listen;
    // Listening everywhere: this machine reaches it on loopback.
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if control.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{listen}")
}

#[derive(Subcommand)]
enum Command {
    /// The daemon, its uplink to the hub, and every channel.
    Status {
        #[command(flatten)]
        to: DaemonArgs,
    },
    /// The channels live, in at most 80 columns (redrawn in place on a terminal, appended
    /// otherwise): state, test time, V, I, T, the test, cell and protocol, the step, and the
    /// step's and cycle's capacity. Ends when the daemon stops, with one line saying so on
    /// standard error and exit status 1 (the daemon went away under it).
    Watch {
        #[command(flatten)]
        to: DaemonArgs,
    },
    /// Start a protocol on a channel.
    Start {
        #[command(flatten)]
        to: DaemonArgs,
        /// Channel id, DEVICE/N.
        channel: String,
        /// Protocol file (YAML).
        #[arg(long)]
        protocol: PathBuf,
        /// The cell under test (the `cell_id` metadata).
        #[arg(long)]
        cell: Option<String>,
        /// Metadata as key=value: cell_id, operator, owner, objective, chemistry and
        /// nominal_capacity_ah are required; secondary.KEY and tertiary.KEY are free-form.
        /// Overrides the metadata file.
        #[arg(long = "meta", value_parser = parse_kv)]
        meta: Vec<(String, String)>,
        /// Metadata file (TOML): primary keys at the top, `[secondary]` and `[tertiary]`
        /// tables for the other tiers.
        #[arg(long)]
        meta_file: Option<PathBuf>,
        /// A value for one of the protocol's parameters, NAME=VALUE with its unit (e.g.
        /// `--param v_max=4.1V`); repeatable. `capacity`, which C-rates use, defaults to the
        /// cell's nominal_capacity_ah.
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    /// The outbox: backlog, oldest unacknowledged entry, dead letters.
    Outbox {
        #[command(flatten)]
        to: DaemonArgs,
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Check, compile, import and simulate protocols (works without a daemon).
    Protocol {
        /// A value for one of the protocol's parameters, NAME=VALUE with its unit (e.g.
        /// `--param capacity=5Ah`); repeatable; as `start --param` gives it.
        #[arg(long = "param", global = true, value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(subcommand)]
        action: ProtocolAction,
    },
    /// Stop the test on a channel (output off, recorded as stopped).
    Stop {
        #[command(flatten)]
        to: DaemonArgs,
        /// Channel id, DEVICE/N.
        channel: String,
        /// Why, in words: recorded with the test's end.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ProtocolAction {
    /// Parse a protocol, show its plan in brief, and say which targets can run it: natively,
    /// supervised by the daemon, or not at all (every problem, not the first).
    Check {
        /// The protocol file (YAML).
        file: PathBuf,
        /// List every step on this target: native, supervised (and how), or impossible.
        #[arg(long)]
        target: Option<String>,
    },
    /// Compile a protocol to a cycler's native schedule.
    Compile {
        /// The protocol file (YAML).
        file: PathBuf,
        /// maccor, neware, arbin, biologic, pybamm or pybamm-json.
        #[arg(long)]
        target: String,
        /// Output file; standard output when absent.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Read a cycler's native schedule (or an aurora-unicycler protocol) and write it as a
    /// protocol (YAML).
    Import {
        /// The cycler's schedule file (or the aurora-unicycler JSON).
        file: PathBuf,
        /// maccor, neware, arbin, biologic or unicycler (aurora-unicycler JSON); guessed from
        /// the file when absent.
        #[arg(long)]
        from: Option<String>,
        /// Output file; standard output when absent.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run a protocol against the cell model and report what it does.
    Simulate {
        /// The protocol file (YAML).
        file: PathBuf,
        /// nmc or lfp.
        #[arg(long, default_value = "nmc")]
        cell: String,
        /// Cell capacity, e.g. 2.5Ah (defaults to the protocol's params.capacity).
        #[arg(long)]
        capacity: Option<String>,
        /// Seconds between simulated measurements.
        #[arg(long, default_value_t = 1.0)]
        dt: f64,
        /// Write the recorded rows as CSV: the columns of the hub's BDF CSV export. Rows are
        /// kept by the protocol's `record` rules, as a stepped channel keeps them (see --every
        /// and --all-samples).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Record one row every SECONDS (and each step's first and last) instead of the
        /// protocol's `record` rules.
        #[arg(long, value_name = "SECONDS", conflicts_with = "all_samples")]
        every: Option<f64>,
        /// Record every simulated measurement (one per --dt) instead of the protocol's
        /// `record` rules.
        #[arg(long)]
        all_samples: bool,
        /// Stop once N cycles were simulated (at the end of the Nth).
        #[arg(long, value_name = "N")]
        cycles: Option<u32>,
        /// Draw voltage and current against time as SVG.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Put every dead letter back in the queue.
    Retry,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cyclerctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Adds the token, if any, to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = ControlClient<InterceptedService<Channel, Bearer>>;

async fn connect(to: &DaemonArgs, address: &str) -> anyhow::Result<Client> {
    let bearer = match &to.token {
        Some(token) => Some(cyclerd::proto::bearer(token).ok_or_else(|| {
            anyhow::anyhow!("the token has characters a token never has; copy it again")
        })?),
        None => None,
    };
    if bearer.is_some() && cyclerd::proto::in_clear_to_another_host(address) {
        eprintln!(
            "warning: {address} is plain http: the token crosses the network in clear; serve the \
             control API with TLS ([control] tls_cert, tls_key) and use https://"
        );
    }
    let mut endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|_| anyhow::anyhow!("--daemon {address} is not a URL (http://HOST:PORT)"))?;
    match (address.split_once("://").map(|(s, _)| s), &to.ca) {
        (Some("https"), Some(ca)) => {
            let pem = std::fs::read(ca)
                .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", ca.display()))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| anyhow::anyhow!("the CA file {} is unusable: {e}", ca.display()))?;
        }
        (Some("https"), None) => anyhow::bail!(
            "--daemon {address} needs --ca FILE: the CA (PEM) that signed the daemon's certificate"
        ),
        (Some("http"), None) => {}
        (Some("http"), Some(_)) => anyhow::bail!(
            "--ca is for a daemon serving TLS: give its https:// address, not {address}"
        ),
        _ => anyhow::bail!("--daemon {address} must start with http:// or https://"),
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach cyclerd at {address}: {} (set --daemon, or --config with the lab \
             configuration)",
            cyclerd::proto::connect_failure(address, &e)
        )
    })?;
    Ok(ControlClient::with_interceptor(channel, Bearer(bearer)))
}

/// A refused call said as the daemon says it (what to do), not as a transport error dump.
fn refused(status: Status) -> anyhow::Error {
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            anyhow::anyhow!("refused: {}", status.message())
        }
        _ => status.into(),
    }
}

/// Output piped into `head` or a closed terminal ends `watch` quietly.
fn quiet_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Protocol { action, params } = cli.command {
        return protocol(action, &params.into_iter().collect());
    }
    let to = match &cli.command {
        Command::Status { to }
        | Command::Watch { to }
        | Command::Start { to, .. }
        | Command::Outbox { to, .. }
        | Command::Stop { to, .. } => to,
        Command::Protocol { .. } => unreachable!("handled above"),
    };
    let address = to.address()?;
    let mut client = connect(to, &address).await?;
    match cli.command {
        Command::Protocol { .. } => unreachable!("handled above"),
        Command::Status { .. } => {
            let s = client
                .get_status(GetStatusRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let mut lines = vec![
                format!("daemon   {} (store epoch {})", s.daemon_id, s.store_epoch),
                format!(
                    "hub      {} {}",
                    s.hub_address,
                    if s.hub_connected {
                        "connected"
                    } else {
                        "NOT CONNECTED"
                    }
                ),
                format!(
                    "outbox   {} entries waiting; {} samples acquired, {} acknowledged",
                    s.backlog_entries, s.samples_acquired, s.samples_acknowledged
                ),
            ];
            // An alarm is said in full (it says what to do), over as many lines as it takes.
            for a in &s.alarms {
                lines.extend(view::wrap(&format!("ALARM    {a}"), "         "));
            }
            lines.extend(view::alert_lines(&s.alerts));
            lines.extend(view::render(&s.channels));
            for line in lines {
                println!("{}", view::fit(&line, view::WIDTH));
            }
        }
        Command::Watch { .. } => watch(&mut client, &address).await?,
        Command::Start {
            to: _,
            channel,
            protocol,
            cell,
            meta,
            meta_file,
            params,
        } => {
            let protocol_yaml = std::fs::read_to_string(&protocol)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", protocol.display()))?;
            // Refused here as `protocol check` refuses it, not by the transport on the way.
            cyclerd_protocols::check_size(&protocol_yaml, &protocol.display().to_string())?;
            let mut metadata: HashMap<String, String> = match &meta_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    cyclerd::metadata::from_toml(&text, &path.display().to_string())
                        .map_err(|e| anyhow::anyhow!(e))?
                }
                None => HashMap::new(),
            };
            if let Some(cell) = cell {
                metadata.insert("cell_id".into(), cell);
            }
            metadata.extend(meta);
            let r = client
                .start_test(StartTestRequest {
                    channel_id: channel.clone(),
                    protocol_yaml,
                    metadata,
                    params: params.into_iter().collect(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            println!("started test {} on {channel}", r.test_id);
            for note in &r.notes {
                println!("  note: {note}");
            }
        }
        Command::Outbox { action: None, .. } => {
            let o = client
                .get_outbox(GetOutboxRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            println!("outbox        {}", o.path);
            println!(
                "backlog       {} entries, {} samples, {} bytes{}",
                o.pending_entries,
                o.pending_samples,
                o.pending_bytes,
                if o.max_bytes > 0 {
                    format!(" (quota {} bytes)", o.max_bytes)
                } else {
                    String::new()
                }
            );
            println!("oldest unacked {:.1} s", o.oldest_pending_age_s);
            println!("dead letters  {}", o.dead_letters);
            println!("kept acked    {}", o.kept_acked);
            println!("file          {} bytes", o.file_bytes);
            if o.full {
                println!("ALARM         the outbox is full: stepped channels are paused");
            }
        }
        Command::Outbox {
            action: Some(OutboxAction::Retry),
            ..
        } => {
            let r = client
                .retry_dead_letters(RetryDeadLettersRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            println!("requeued {} dead letters", r.requeued);
        }
        Command::Stop {
            channel, reason, ..
        } => {
            client
                .stop_test(StopTestRequest {
                    channel_id: channel.clone(),
                    reason,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            println!("stopped {channel}");
        }
    }
    Ok(())
}

fn read_plan(
    file: &std::path::Path,
    params: &BTreeMap<String, String>,
) -> anyhow::Result<(String, Plan)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    // Drive-cycle profiles (CSV) are named relative to the protocol file.
    let dir = file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let resolver = move |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let plan = Plan::from_yaml_with_params(&text, &file.display().to_string(), &resolver, params)?;
    Ok((text, plan))
}

fn parse_target(name: &str) -> anyhow::Result<Target> {
    Target::from_name(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown target {name:?}; use one of: {}",
            Target::ALL.map(|t| t.name()).join(", ")
        )
    })
}

fn write_out(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

fn protocol(action: ProtocolAction, params: &BTreeMap<String, String>) -> anyhow::Result<()> {
    match action {
        ProtocolAction::Check { file, target } => {
            let target = target.map(|t| parse_target(&t)).transpose()?;
            let (_, plan) = read_plan(&file, params)?;
            let actions = plan
                .steps
                .iter()
                .filter(|s| matches!(s, PlanStep::Action(_)))
                .count();
            let loops = plan
                .steps
                .iter()
                .filter(|s| matches!(s, PlanStep::LoopStart { .. }))
                .count();
            println!(
                "{}: ok: {:?}, {actions} steps in {loops} loops, capacity {}, source sha256 {}",
                file.display(),
                plan.name,
                plan.capacity_ah
                    .map_or("not given".into(), |c| format!("{c} Ah")),
                &plan.source_sha256[..12.min(plan.source_sha256.len())],
            );
            print!("{}", cyclerd_cli::protocol_check::check(&plan, target));
        }
        ProtocolAction::Compile {
            file,
            target,
            output,
        } => {
            let target = parse_target(&target)?;
            let (_, plan) = read_plan(&file, params)?;
            let (files, note) =
                cyclerd_cli::protocol_check::compile_files(&plan, target, output.as_deref())?;
            for (path, text) in files {
                write_out(path.as_deref(), &text)?;
            }
            if let Some(note) = note {
                eprint!("{note}");
            }
        }
        ProtocolAction::Import { file, from, output } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            // Arbin schedules are latin-1; every byte is one character there.
            let text = String::from_utf8(bytes)
                .unwrap_or_else(|e| e.as_bytes().iter().map(|&b| b as char).collect());
            let kind = match from {
                Some(name) => SourceKind::from_name(&name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown format {name:?}; use one of: {}",
                        SourceKind::ALL.map(|k| k.name()).join(", ")
                    )
                })?,
                None => SourceKind::detect(&text).ok_or_else(|| {
                    anyhow::anyhow!(
                        "cannot tell what kind of schedule {} is; say it with --from",
                        file.display()
                    )
                })?,
            };
            let plan = import::import(&text, kind, &file.display().to_string())?;
            write_out(output.as_deref(), &plan.to_yaml())?;
        }
        ProtocolAction::Simulate {
            file,
            cell,
            capacity,
            dt,
            csv,
            every,
            all_samples,
            cycles,
            svg,
        } => {
            let (_, plan) = read_plan(&file, params)?;
            let chemistry = match cell.as_str() {
                "nmc" => Chemistry::Nmc,
                "lfp" => Chemistry::Lfp,
                other => anyhow::bail!("unknown cell {other:?}; use nmc or lfp"),
            };
            let capacity_ah = match capacity {
                Some(text) => {
                    cyclerd_protocols::units::parse_quantity(&text)
                        .map_err(|e| anyhow::anyhow!("--capacity {text:?}: {}", e.message))?
                        .value
                }
                None => plan.capacity_ah.unwrap_or(2.5),
            };
            anyhow::ensure!(
                dt > 0.0 && dt.is_finite(),
                "--dt must be a positive number of seconds"
            );
            let recording = match (every, all_samples) {
                (Some(every), _) => {
                    anyhow::ensure!(
                        every > 0.0 && every.is_finite(),
                        "--every must be a positive number of seconds"
                    );
                    simulate::Recording::Every(every)
                }
                (None, true) => simulate::Recording::All,
                (None, false) => simulate::Recording::Protocol,
            };
            anyhow::ensure!(
                cycles != Some(0),
                "--cycles must be at least 1 (the number of cycles to simulate)"
            );
            let mut csv_out = match &csv {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    simulate::write_csv_header(&mut w)?;
                    Some(w)
                }
                None => None,
            };
            let mut plot = simulate::Decimator::new(4000);
            let mut io_error = None;
            let name = plan.name.clone();
            let options = simulate::SimOptions {
                dt_s: dt,
                recording,
                cycles,
                start_unix_s: cyclerd_drivers::Clock::real().unix_time_s(),
                ..Default::default()
            };
            let report = simulate::simulate(
                plan,
                CellParams::new(chemistry, capacity_ah),
                &options,
                |s| {
                    plot.push(s);
                    if let Some(w) = csv_out.as_mut()
                        && let Err(e) = simulate::write_csv_row(w, s)
                    {
                        io_error.get_or_insert(e);
                    }
                },
            )?;
            if let Some(e) = io_error {
                anyhow::bail!("cannot write the CSV: {e}");
            }
            if let Some(mut w) = csv_out {
                w.flush()?;
            }
            if let Some(path) = &svg {
                std::fs::write(path, simulate::svg(&plot.kept, &name))
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            print_summary(&name, &report, dt);
        }
    }
    Ok(())
}

/// What `cyclerctl protocol simulate` prints: a few summary lines, then the per-cycle table
/// (the same numbers a real test's cycles get at the hub).
fn print_summary(name: &str, report: &simulate::SimReport, dt: f64) {
    println!("{name}: {}", report.outcome);
    println!(
        "duration   {:.2} h ({} measurements every {dt} s, {} rows recorded)",
        report.duration_s / 3600.0,
        report.samples,
        report.rows
    );
    println!("steps      {}", report.steps);
    println!("cycles     {}", report.cycles_simulated);
    println!("charged    {:.4} Ah", report.charge_ah);
    println!("discharged {:.4} Ah", report.discharge_ah);
    println!();
    let rows = cyclerd::proto::cycles::rows(&report.per_cycle);
    for line in cyclerd::proto::cycles::table(&rows) {
        println!("{line}");
    }
}

/// `cyclerctl watch`: every channel's lines as the daemon's snapshots come, redrawn in place
/// when standard output is a terminal (every line fits its 80 columns, so moving the cursor up
/// by the lines drawn lands on the first), each changed channel appended otherwise. The daemon
/// going away (stopped, killed, its host gone) ends it with one plain line, as an error.
async fn watch(client: &mut Client, address: &str) -> anyhow::Result<()> {
    let mut stream = client
        .watch(WatchRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let mut channels: HashMap<String, ChannelSnapshot> = HashMap::new();
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    // Lines of the block drawn last (on a terminal).
    let mut shown = 0;
    let stopped =
        || anyhow::anyhow!("cyclerd stopped: the control API at {address} closed the stream");
    loop {
        let snapshot = match stream.message().await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Err(stopped()),
            Err(status) => {
                return Err(match status.code() {
                    Code::Unauthenticated | Code::PermissionDenied => refused(status),
                    // The connection or the stream broke under it: the daemon went away.
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
                        stopped()
                    }
                    _ => anyhow::anyhow!("the watch ended: {}", status.message()),
                });
            }
        };
        let written = if tty {
            channels.insert(snapshot.channel_id.clone(), snapshot);
            let lines = view::render(channels.values());
            let mut block = if shown > 0 {
                format!("\x1b[{shown}A\r")
            } else {
                String::new()
            };
            for line in &lines {
                block.push_str("\x1b[2K");
                block.push_str(line);
                block.push('\n');
            }
            // Whatever a longer block before left below.
            block.push_str("\x1b[J");
            shown = lines.len();
            out.write_all(block.as_bytes()).and_then(|()| out.flush())
        } else {
            let block: String = view::channel_lines(&snapshot)
                .into_iter()
                .map(|line| line + "\n")
                .collect();
            out.write_all(block.as_bytes()).and_then(|()| out.flush())
        };
        if !quiet_broken_pipe(written)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[path = "cyclerctl/tests.rs"]
mod tests;
