//! The hub's HTTP side, beside gRPC on a listener of its own (`cyclerhub serve --http`): the
//! versioned JSON/Parquet API under `/api/v1` (described by `/api/v1/openapi.json`) and the
//! web app (sign in with a reader token, tests, plots, cells), with the same TLS and token rules
//! as gRPC.
//!
//! # Layout
//! - `mod.rs`: the state both share, the router, the server loop (plain or TLS), and who a
//!   request is (a bearer token, or the session cookie of a signed-in page), checked by the same
//!   [`Authenticator`] gRPC uses;
//! - `api.rs`: the JSON routes, answering `{"error": ...}` with a proper status on failure;
//! - `stream.rs`: samples as CSV or Parquet (and the exports), streamed from the store a page
//!   at a time;
//! - `plot.rs`: a time window reduced to min/max per pixel column, for plots of any size;
//! - `openapi.rs`: the OpenAPI 3 document of the API;
//! - `session.rs`: the app's server-side sessions (cookie, expiry, sign out);
//! - `app.rs`: the web app's pages (askama templates in `hub/templates/`).

mod api;
mod app;
mod arrow;
mod openapi;
mod plot;
mod session;
mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::Status;

use crate::auth::{Authenticator, Caller};
use crate::store::HubStore;
pub use openapi::document as openapi_document;
pub use session::Sessions;

/// What every HTTP handler shares.
#[derive(Clone)]
pub struct HttpState {
    /// Where queries read (the `--read-db` replica when given).
    pub store: HubStore,
    /// The token check gRPC uses too.
    pub auth: Authenticator,
    /// The web app's signed-in sessions.
    pub sessions: Sessions,
    /// Whether the listener speaks TLS: the session cookie is then `Secure`.
    pub tls: bool,
    /// The hub's counters: served at `/metrics`, and the API's durations go there.
    pub metrics: crate::metrics::HubMetrics,
    /// The lab-wide alerts (`--alerts`), for the alerts page.
    pub alerts: Option<crate::alerts::HubAlerts>,
}

/// The router of the whole HTTP side: API, app and the shared assets.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(
            api::routes().route_layer(axum::middleware::from_fn_with_state(state.clone(), timed)),
        )
        .merge(app::routes())
        .route("/metrics", axum::routing::get(metrics))
        .merge(cyclerd_web::assets_router())
        .with_state(state)
}

/// Times an API request to its response's head (a streamed body is not waited for), by route
/// template, so no id ends up in a label.
async fn timed(
    axum::extract::State(state): axum::extract::State<HttpState>,
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _timer = state.metrics.query("http", route.as_str().to_owned());
    next.run(request).await
}

/// The hub's metrics, for any valid token when the hub requires them (as the API's reads); the
/// series carry no lab's data.
async fn metrics(
    axum::extract::State(state): axum::extract::State<HttpState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&state, &headers).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
        .into_response())
}

/// Serves `router` on `listener` (with TLS when `tls` holds a server config) until `shutdown`
/// completes; connections open then are left to finish their responses.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match acceptor {
                Some(acceptor) => match acceptor.accept(socket).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// A rustls server config from a PEM certificate chain and key, for the HTTP listener.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the TLS certificate is not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("the TLS key is not a PEM private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS setup failed: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow::anyhow!("the TLS certificate or key is unusable: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An API failure: a status code and a message, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status it is answered with.
    pub status: StatusCode,
    /// What was wrong and what to do, for people.
    pub message: String,
}

impl ApiError {
    /// A `400 Bad Request` saying `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A `500` for a failed blocking task or store.
    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
        }
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        use tonic::Code;
        let status = match s.code() {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            message: s.message().to_string(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::from(crate::query::status(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cyclerhub\""),
            );
        }
        response
    }
}

/// Who sends a request: the `authorization: Bearer` token it carries or, failing that, the
/// token of the signed-in session its cookie names. `Ok(None)` when the hub does not require
/// tokens; `401` when it does and neither is valid.
pub async fn caller(state: &HttpState, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    Ok(state.auth.caller(&credentials(state, headers)).await?)
}

/// The request's credential as gRPC metadata (`authorization: Bearer ...`), for the
/// [`Authenticator`]: its own header, else its session's token.
pub fn credentials(state: &HttpState, headers: &HeaderMap) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            state
                .sessions
                .token(headers)
                .map(|token| format!("Bearer {token}"))
        });
    if let Some(value) = bearer.and_then(|b| b.parse().ok()) {
        metadata.insert("authorization", value);
    }
    metadata
}

/// Runs `f` on a blocking thread (the store's reads block), mapping a failed task to a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The export formats a test downloads in, by the name in the URL.
pub const EXPORTS: [(&str, &str); 7] = [
    ("bdf-csv", "Battery Data Format, CSV"),
    ("bdf-parquet", "Battery Data Format, Parquet"),
    ("cycles-csv", "per-cycle table, CSV"),
    ("cycles-parquet", "per-cycle table, Parquet"),
    (
        "battery-archive-timeseries",
        "Battery Archive timeseries CSV",
    ),
    ("battery-archive-cycles", "Battery Archive cycle CSV"),
    ("metadata-json", "metadata JSON"),
];
