//! `cyclerhub serve`: the hub on its address, closed to other machines unless TLS and tokens
//! (or `--insecure`) open it, until Ctrl-C or SIGTERM.

use super::open;
use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::path::PathBuf;

/// What `serve` lets in at once.
pub(super) struct Limits {
    pub max_upload_streams: usize,
    pub max_bytes_in_flight: usize,
    /// `None`: the default, within the open-file limit.
    pub max_connections: Option<usize>,
    /// `--alerts FILE`.
    pub alerts: Option<PathBuf>,
    /// `--quality FILE`.
    pub quality: Option<PathBuf>,
}

/// The thresholds `--quality FILE` gives (the defaults without one); errors name the file and
/// the key.
pub(super) fn quality_thresholds(
    path: Option<&std::path::Path>,
) -> Result<cyclerd_proto::quality::config::Layered> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the quality file {}", path.display()))?;
    let table: serde_json::Map<String, serde_json::Value> =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    cyclerd_proto::quality::config::Layered::from_table(table, "lab", "quality")
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub(super) fn serve(
    (db, read_db): (String, Option<String>),
    (listen, http): (SocketAddr, Option<SocketAddr>),
    tls: Option<(PathBuf, PathBuf)>,
    require_tokens: bool,
    insecure: bool,
    (limits, log_format): (Limits, cyclerd_proto::logs::LogFormat),
) -> Result<()> {
    // Before anything opens a file: the unit's LimitNOFILE (the hard limit) is what counts.
    let open_files = cyclerd_proto::incoming::raise_open_file_limit();
    let max_connections = limits.max_connections.unwrap_or_else(|| {
        cyclerd_proto::incoming::max_connections_within(
            cyclerd_proto::incoming::DEFAULT_MAX_CONNECTIONS,
            open_files,
        )
    });
    // The HTTP listener follows the same rule as gRPC's: the more open of the two decides.
    let open_to = [Some(listen), http]
        .into_iter()
        .flatten()
        .find_map(|at| open_to_the_network(at, tls.is_some(), require_tokens).map(|m| (at, m)));
    if let Some((at, missing)) = &open_to
        && !insecure
    {
        anyhow::bail!(
            "refusing to serve on {at}, which other machines can reach, without {missing}: \
             give --tls-cert FILE --tls-key FILE and --require-tokens (see `cyclerhub token \
             issue`), listen on 127.0.0.1, or say --insecure for a network you trust"
        );
    }
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let (tls, http_tls) = match tls {
        Some((cert, key)) => {
            let (cert, key) = (read(&cert, "certificate")?, read(&key, "key")?);
            let http_tls = match http {
                Some(_) => Some(crate::http::tls_config(&cert, &key)?),
                None => None,
            };
            (
                Some(tonic::transport::Identity::from_pem(cert, key)),
                http_tls,
            )
        }
        None => (None, None),
    };
    // Checked before anything listens, like the alerts file.
    let quality = quality_thresholds(limits.quality.as_deref())?;
    // Checked before anything listens: a bad alerts file is a failed start, not a silent hub.
    let alerts_section = limits
        .alerts
        .as_deref()
        .map(crate::alerts::load)
        .transpose()?;
    cyclerd_proto::logs::init("info", log_format);
    if let Some((at, missing)) = &open_to {
        tracing::warn!(
            "--insecure: serving on {at}, which other machines can reach, without {missing}: \
             anyone who reaches the port can upload as a daemon and read every lab's data"
        );
    }
    tracing::debug!(?open_files, max_connections, "open-file limit");
    let store = open(&db, false)?.with_quality(quality);
    let alerts = match &alerts_section {
        Some(section) => crate::alerts::HubAlerts::open(section, &db, "cyclerhub")?,
        None => None,
    };
    let read_store = match &read_db {
        Some(url) if !crate::store::is_postgres_url(url) => {
            anyhow::bail!("--read-db {url} is not a PostgreSQL URL: give a streaming replica's")
        }
        Some(url) => Some(crate::HubStore::connect_read_only(url)?),
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (in use? try --listen ADDR)"))?;
        let http = match http {
            Some(at) => Some(crate::server::HttpListener {
                listener: tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} (in use? try --http ADDR)"))?,
                tls: http_tls,
            }),
            None => None,
        };
        // Listened for before READY=1: systemd may stop the hub as soon as it is up.
        let stop = shutdown_signal();
        // systemd (`Type=notify`): up once the ports listen and the database is migrated.
        #[cfg(unix)]
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
        }
        let shutdown = async {
            stop.await;
            tracing::info!("shutting down");
            #[cfg(unix)]
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        };
        let options = crate::server::ServeOptions {
            tls,
            require_tokens,
            max_upload_streams: limits.max_upload_streams,
            max_bytes_in_flight: limits.max_bytes_in_flight,
            connections: cyclerd_proto::incoming::Limits {
                max_connections: max_connections.max(1),
                ..cyclerd_proto::incoming::Limits::default()
            },
            read_store,
            alerts,
            ..crate::server::ServeOptions::default()
        };
        crate::server::serve_all(listener, http, store, options, shutdown).await
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
/// On unix both are listened for from this call on, not from the first poll: a signal that
/// comes in between would otherwise kill the hub (the default action) without its cleanup.
/// Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        match signals {
            Ok((mut term, mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGINT; waiting for Ctrl-C alone")
            }
        }
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot wait for Ctrl-C; stop the hub with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
