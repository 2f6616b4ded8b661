//! The web monitor: the lab's channels in a browser, live, with start and stop forms.
//!
//! A second face of the state the control API serves: the pages read the daemon's live channel
//! snapshots ([`Daemon::watchers`]), push them with server-sent events through the same
//! coalescing the gRPC Watch uses, and start and stop tests with the same daemon calls (and so
//! the same metadata and protocol checks) as `cyclerctl start|stop`. Access follows the control
//! API's rule ([`crate::control::access`]) with its tokens file.
//!
//! - [`routes`]: the router and the pages' handlers.
//! - [`auth`]: tokens (a bearer header or a sign-in session cookie) and the same-origin check.
//! - [`forms`]: the start form, parsed and passed to [`Daemon::start_test_with`].
//! - [`sse`]: the event streams of channel snapshots.
//! - [`feed`]: the overview's stream, encoded once for all its pages.
//! - [`history`]: the points and cycles of each channel's running test, for its plots.
//! - [`templates`]: the pages (askama, autoescaped) and the views they show.

mod auth;
mod feed;
mod forms;
mod history;
mod routes;
mod sse;
mod templates;

use crate::config::Config;
use crate::control::tokens::TokenStore;
use crate::daemon::Daemon;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the monitor serves: tokens required or not, TLS or not.
#[derive(Clone, Default)]
pub struct WebOptions {
    /// The tokens readers and operators present; `None`: every page and form open (loopback).
    pub tokens: Option<TokenStore>,
    /// The TLS server configuration (the control API's certificate); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for WebOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebOptions")
            .field("tokens", &self.tokens)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl WebOptions {
    /// As `config` (read from `origin`) says: tokens from `[control] tokens_file` when
    /// [`Config::web_requires_tokens`], TLS from `[control] tls_cert`/`tls_key` when given.
    pub fn from_config(config: &Config, origin: &str) -> anyhow::Result<WebOptions> {
        let c = &config.control;
        let tls = match (&c.tls_cert, &c.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key, origin)?),
            _ => None,
        };
        let tokens = config
            .web_requires_tokens()
            .then(|| TokenStore::new(config.control_tokens_file()));
        Ok(WebOptions { tokens, tls })
    }
}

/// A rustls server configuration from PEM files (the ring provider, as tonic's).
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    origin: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{origin}: control.tls_cert = {}: not a PEM certificate chain: {e}",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "{origin}: control.tls_key = {}: not a PEM private key: {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("{origin}: control.tls_cert/tls_key: {e}"))?;
    Ok(Arc::new(config))
}

/// Serves the monitor for `daemon` on `listener` as `options` say, until `shutdown` completes;
/// open event streams end then too.
pub async fn run(
    daemon: Daemon,
    listener: TcpListener,
    options: WebOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stopping) = watch::channel(false);
    let recorder = history::History::record(&daemon);
    let status_of = daemon.clone();
    let feed = feed::Feed::start(
        daemon.watchers(),
        Box::new(move || templates::StatusView::of(&status_of)),
        stopping.clone(),
    );
    let loopback = listener.local_addr()?.ip().is_loopback();
    let state = routes::AppState::new(
        daemon,
        options.clone(),
        recorder.clone(),
        feed,
        stopping,
        loopback,
    );
    let app = routes::router(state);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served = match options.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = TlsListener {
                tcp: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(tls),
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    recorder.stop();
    served
}

/// A TCP listener whose connections are TLS: handshakes that fail or stall are dropped.
struct TlsListener {
    /// The bound socket.
    tcp: TcpListener,
    /// The server's certificate and key.
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum's own listener does.
                    tracing::warn!("web monitor: accept: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!("web monitor: TLS handshake from {addr}: {e}"),
                Err(_) => tracing::debug!("web monitor: TLS handshake from {addr} timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
