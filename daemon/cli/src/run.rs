//! `cyclerd run`: the daemon on a configuration file, from the start (devices tried, ports
//! bound) to the stop (outputs off, outbox flushed). Shared by the command line and the Windows
//! service.

use cyclerd::config::Config;
use cyclerd::{Daemon, control};
use cyclerd_drivers::Clock;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Where `run` and `check-config` look for the lab configuration when none is given.
#[cfg(not(windows))]
pub const DEFAULT_CONFIG: &str = "/etc/cyclerd/cyclerd.toml";
/// Where `run`, `check-config` and the service look for the lab configuration when none is
/// given.
#[cfg(windows)]
pub const DEFAULT_CONFIG: &str = r"C:\ProgramData\cyclerd\cyclerd.toml";

/// Runs the daemon on the configuration at `path` until `stop` completes (listened for
/// before this is called, so that a stop during the start still switches outputs off); `ready`
/// is called once every device was tried and the control port listens (the Windows service
/// reports itself running then; systemd hears READY=1 here too).
pub async fn run(
    path: &Path,
    clock: Clock,
    open_files: Option<u64>,
    stop: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // A write past the file-size limit (RLIMIT_FSIZE, a quota) would kill the process with
    // SIGXFSZ; handled, it becomes a failed commit, which pauses acquisition until space returns.
    #[cfg(unix)]
    let _file_size_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    let config = Config::load(path)?;
    // From here on a failed start may leave the outputs of a killed daemon's tests on: they are
    // switched off before the process exits (a unit restarted on failure would loop with them on).
    let started = match start(config.clone(), path, clock.clone()).await {
        Ok(started) => started,
        Err(e) => {
            tracing::error!("cyclerd cannot start: {e:#}; switching every reachable output off");
            cyclerd::failsafe::outputs_off(&config, &clock).await;
            return Err(e);
        }
    };
    let (daemon, listener, listen, mut options, web) = started;
    if config.control.beyond_loopback() && config.control.insecure {
        tracing::warn!(
            "control.insecure: the control API on {listen} is reachable from other machines{}{}",
            if config.control.missing_tls() {
                ", without TLS"
            } else {
                ""
            },
            if options.access.is_none() {
                ", and without tokens: anyone who reaches the port may start and stop tests"
            } else {
                ""
            }
        );
    }
    tracing::info!(
        daemon_id = %daemon.outbox().identity().daemon_id,
        tls = options.tls.is_some(),
        tokens_required = options.access.is_some(),
        "cyclerd running; control API on {listen}"
    );
    let limits = cyclerd::proto::incoming::Limits {
        max_connections: config.control.max_connections.unwrap_or_else(|| {
            cyclerd::proto::incoming::max_connections_within(
                cyclerd::proto::incoming::DEFAULT_MAX_CONNECTIONS,
                open_files,
            )
        }),
        ..Default::default()
    };
    tracing::debug!(
        ?open_files,
        ?limits,
        "open-file limit and control connections"
    );
    options.limits = limits;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::serve_with(
        daemon.clone(),
        listener,
        options,
        async {
            let _ = stop_rx.await;
        },
    ));
    let (web_stop_tx, web_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let web_server = web.map(|(web_listener, web_options)| {
        let scheme = if web_options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        if let Ok(addr) = web_listener.local_addr() {
            if !addr.ip().is_loopback()
                && (web_options.tls.is_none() || web_options.tokens.is_none())
            {
                tracing::warn!(
                    "control.insecure: the web monitor on {addr} is reachable from other \
                     machines{}{}",
                    if web_options.tls.is_none() {
                        ", without TLS"
                    } else {
                        ""
                    },
                    if web_options.tokens.is_none() {
                        ", and without tokens: anyone who reaches the port may start and stop \
                         tests"
                    } else {
                        ""
                    }
                );
            }
            tracing::info!(
                tokens_required = web_options.tokens.is_some(),
                "web monitor on {scheme}://{addr}/"
            );
        }
        tokio::spawn(cyclerd::web::run(
            daemon.clone(),
            web_listener,
            web_options,
            async {
                let _ = web_stop_rx.await;
            },
        ))
    });
    crate::systemd::ready(&format!("running; control API on {listen}"));
    ready();
    // The watchdog is fed from the channel loops themselves (see systemd::feed_watchdog).
    let watchdog = crate::systemd::watchdog_interval()
        .map(|interval| tokio::spawn(crate::systemd::feed_watchdog(daemon.clone(), interval)));
    stop.await;
    crate::systemd::stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = web_stop_tx.send(());
    if let Some(web_server) = web_server {
        let _ = web_server.await;
    }
    tracing::info!(
        "shutting down: switching outputs off and flushing the outbox; running stepped tests \
         stay interrupted and the next start resumes them"
    );
    let summary = daemon.shutdown(Duration::from_secs(5)).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    tracing::info!(
        "stopped; {} samples not yet acknowledged by the hub stay in the outbox",
        summary.lost()
    );
    Ok(())
}

/// Reads the control API's TLS files, takes its port (and the web monitor's, unless it is off)
/// and starts the daemon on `config` (read from `path`); the address is the one bound (a port 0
/// in the configuration is chosen here).
async fn start(
    config: Config,
    path: &std::path::Path,
    clock: Clock,
) -> anyhow::Result<(
    Daemon,
    tokio::net::TcpListener,
    SocketAddr,
    control::ServeOptions,
    Option<(tokio::net::TcpListener, cyclerd::web::WebOptions)>,
)> {
    let origin = path.display().to_string();
    let options = control::ServeOptions::from_config(&config, &origin)?;
    let listen = config.control.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("{origin}: control.listen = {listen}: {e}"))?;
    let listen = listener.local_addr().unwrap_or(listen);
    let web = match config
        .web
        .address()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?
    {
        Some(address) => {
            let web_options = cyclerd::web::WebOptions::from_config(&config, &origin)?;
            let web_listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("{origin}: web.listen = {address}: {e}"))?;
            Some((web_listener, web_options))
        }
        None => None,
    };
    let daemon = Daemon::start(config, &origin, clock).await?;
    Ok((daemon, listener, listen, options, web))
}
