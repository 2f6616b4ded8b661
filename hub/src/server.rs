//! The hub's gRPC server: `cyclerd.ingest.v1.Ingest`, `cyclerd.hub.v1.Query`, gRPC health and
//! reflection. With [`ServeOptions::require_tokens`] both services check the caller's token
//! through one [`Authenticator`].
//!
//! Each Upload stream gets its own task. The task waits for at least one entry, then takes
//! whatever else is already decoded-ready on the stream (bounded by [`MAX_BATCH_ENTRIES`] and
//! [`MAX_BATCH_BYTES`]), hands the batch to the store on a blocking thread (the store's writer
//! mutex makes that ONE writer for all streams), and answers with the batch's Rejections and one
//! cumulative Ack once the commit is done. While a batch commits, the HTTP/2 flow-control
//! windows (raised well above the defaults) keep the daemon's bytes flowing into buffers.

use std::future::Future;
use std::pin::Pin;

use cyclerd_proto::incoming::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, Limits, incoming};
use cyclerd_proto::ingest::ingest_server::{Ingest, IngestServer};
use cyclerd_proto::ingest::{
    Ack, Entry, Hello, ResumePoint, UploadRequest, UploadResponse, upload_request, upload_response,
};
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Recheck};
use crate::query::QueryService;
use crate::store::{BatchOutcome, HubStore, ShareOrigin, StoreError, error_chain};
use crate::token::Role;
use cyclerd_proto::hub::query_server::QueryServer;

/// Most entries applied in one transaction: big enough to amortise the commit (an fsync with
/// `synchronous=FULL`), small enough that acks keep coming.
pub const MAX_BATCH_ENTRIES: usize = 4096;
/// Most encoded bytes applied in one transaction, for the same reasons.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Largest message accepted from a daemon: one entry may carry many samples after an outage.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 << 20;
/// Largest query request accepted: a real one (a test id, a few column names) is a few hundred
/// bytes, so anything near this is not a query worth decoding.
pub const MAX_QUERY_REQUEST_SIZE: usize = 1 << 20;
/// HTTP/2 per-stream window: how much a daemon may send ahead while a batch commits.
pub const INITIAL_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-connection window.
pub const INITIAL_CONNECTION_WINDOW: u32 = 32 << 20;

/// Serves the hub on an already bound `listener` until `shutdown` completes, then stops taking
/// connections, ends open upload streams with `UNAVAILABLE` (after committing and acking what
/// they already received) and returns.
///
/// The caller binds, so tests can bind `127.0.0.1:0` and read the port before serving.
pub async fn run(
    listener: TcpListener,
    store: HubStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, store, ServeOptions::default(), shutdown).await
}

/// How the hub serves, beyond its socket and store.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// TLS certificate chain and key (PEM): daemons then connect with `https://` and check
    /// the chain against the CA in their `hub.ca_file`. `None` serves plain HTTP/2 (for a hub
    /// on the lab PC itself, or behind a TLS-terminating proxy).
    pub tls: Option<tonic::transport::Identity>,
    /// Refuse uploads and queries without a valid token (`cyclerhub token issue`), bind each
    /// daemon to its token's lab, and answer queries about the token's lab only. Off for a hub
    /// only its own lab PC talks to (the demo, tests).
    pub require_tokens: bool,
    /// How long an open upload or tail stream's token is trusted before it is checked again,
    /// so that revoking it ends streams already open.
    pub token_recheck: std::time::Duration,
    /// Upload streams served at once; one more is answered `RESOURCE_EXHAUSTED` (its daemon
    /// retries later), so a crowd of clients cannot take the hub's memory.
    pub max_upload_streams: usize,
    /// Bytes of decoded entries being applied at once, all streams together; a batch beyond
    /// waits for room (its stream stops reading, so its daemon stops sending).
    pub max_bytes_in_flight: usize,
    /// Connections open at once, and how long a new one may stay silent
    /// ([`cyclerd_proto::incoming`]), so a crowd of idle peers cannot take every descriptor.
    pub connections: Limits,
    /// Where queries read (`--read-db`, a streaming replica of the store's PostgreSQL
    /// database); `None`: the store itself. Uploads and tokens always use the store.
    pub read_store: Option<HubStore>,
    /// Lab-wide alert rules (`--alerts FILE`), run while the hub serves.
    pub alerts: Option<crate::alerts::HubAlerts>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            require_tokens: false,
            token_recheck: std::time::Duration::from_secs(30),
            max_upload_streams: 64,
            max_bytes_in_flight: 256 << 20,
            connections: Limits::default(),
            read_store: None,
            alerts: None,
        }
    }
}

/// [`run`] with options (TLS).
pub async fn run_with(
    listener: TcpListener,
    store: HubStore,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_all(listener, None, store, options, shutdown).await
}

/// The hub's HTTP listener (API and web app), beside gRPC.
pub struct HttpListener {
    /// Already bound, so tests can bind port 0 and read it.
    pub listener: TcpListener,
    /// Its TLS (`None`: plain HTTP), from the same certificate and key as gRPC's.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// [`run_with`], and the HTTP API and web app on `http` when given, both until `shutdown`.
pub async fn serve_all(
    listener: TcpListener,
    http: Option<HttpListener>,
    store: HubStore,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|e| format!("? ({e})"), |a| a.to_string());
    // Upload streams live as long as their daemons do; tonic's graceful shutdown would wait
    // for them forever, so they watch this flag and end themselves.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };

    // Bumped after every commit, so live tails wake without polling the database.
    let (applied_tx, applied) = watch::channel(0u64);
    // Other processes on the same database commit too: their samples wake the tails here.
    let read_store = options.read_store.clone().unwrap_or_else(|| store.clone());
    read_store.follow_commits(applied_tx.clone());
    // The hub's shares to other hubs (`cyclerhub share`), filled as the store commits.
    tokio::spawn(crate::share::send::run(
        store.clone(),
        applied_tx.subscribe(),
        stop_rx.clone(),
    ));
    let auth = Authenticator::new(store.clone(), options.require_tokens);
    // Which daemons have a stream open: the alerts' daemon_offline rule reads it.
    let presence = crate::alerts::Presence::default();
    if let Some(alerts) = options.alerts.clone() {
        alerts
            .start(store.clone(), presence.clone(), stop_rx.clone())
            .await;
    }
    let streams = Arc::new(Semaphore::new(options.max_upload_streams));
    let metrics = crate::metrics::HubMetrics::new(streams.clone(), options.max_upload_streams);
    if let Some(http) = http {
        let state = crate::http::HttpState {
            metrics: metrics.clone(),
            store: options.read_store.clone().unwrap_or_else(|| store.clone()),
            auth: auth.clone(),
            sessions: crate::http::Sessions::default(),
            tls: http.tls.is_some(),
            alerts: options.alerts.clone(),
        };
        let at = http
            .listener
            .local_addr()
            .map_or_else(|e| format!("? ({e})"), |a| a.to_string());
        tracing::info!(addr = %at, tls = state.tls, "cyclerhub serving HTTP (API and web app)");
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::http::serve(
            http.listener,
            crate::http::router(state),
            http.tls,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    let query = QueryServer::new(QueryService {
        store: read_store,
        applied,
        auth: auth.clone(),
        token_recheck: options.token_recheck,
        stop: stop_rx.clone(),
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(MAX_QUERY_REQUEST_SIZE);
    let ingest = IngestServer::new(IngestService {
        store,
        stop: stop_rx,
        presence,
        applied: std::sync::Arc::new(applied_tx),
        auth,
        token_recheck: options.token_recheck,
        streams,
        metrics,
        max_streams: options.max_upload_streams,
        in_flight: Arc::new(Semaphore::new(kib(options.max_bytes_in_flight))),
        in_flight_total: kib(options.max_bytes_in_flight),
    })
    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);

    // Health and reflection for every service of this port, the hub's contract only.
    let conventions = cyclerd_proto::grpc::conventions(
        cyclerd_proto::HUB_DESCRIPTOR_SET,
        &[
            <IngestServer<IngestService> as tonic::server::NamedService>::NAME,
            <QueryServer<QueryService> as tonic::server::NamedService>::NAME,
        ],
    )
    .await?;

    tracing::info!(%addr, tls = options.tls.is_some(), "cyclerhub serving");
    let mut builder = Server::builder();
    if let Some(identity) = options.tls {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| anyhow::anyhow!("the TLS certificate or key is unusable: {e}"))?;
    }
    builder
        .initial_stream_window_size(INITIAL_STREAM_WINDOW)
        .initial_connection_window_size(INITIAL_CONNECTION_WINDOW)
        // A daemon whose network went away answers no ping: its connection is dropped.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(conventions.health)
        .add_service(conventions.reflection_v1)
        .add_service(conventions.reflection_v1alpha)
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(incoming(listener, options.connections), signal)
        .await?;
    tracing::info!("cyclerhub stopped");
    Ok(())
}

/// The `cyclerd.ingest.v1.Ingest` service.
#[derive(Clone)]
struct IngestService {
    /// Where entries are applied; shared by every stream (its writer is the single writer).
    store: HubStore,
    /// Becomes `true` when the server shuts down, so streams end instead of holding it open.
    stop: watch::Receiver<bool>,
    /// Which daemons have a stream open.
    presence: crate::alerts::Presence,
    /// Bumped after each applied batch, for the query side's live tails.
    applied: std::sync::Arc<watch::Sender<u64>>,
    /// Checks the stream's token, when the hub requires them.
    auth: Authenticator,
    /// How long an open stream's token holds before it is checked again.
    token_recheck: std::time::Duration,
    /// One permit per upload stream served ([`ServeOptions::max_upload_streams`]).
    streams: Arc<Semaphore>,
    max_streams: usize,
    /// Counts what is stored, for `/metrics`.
    metrics: crate::metrics::HubMetrics,
    /// One permit per KiB of entries being applied ([`ServeOptions::max_bytes_in_flight`]).
    in_flight: Arc<Semaphore>,
    in_flight_total: usize,
}

/// Bytes as KiB permits, at least one, within what a semaphore can hold.
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS)
}

type ResponseTx = mpsc::Sender<Result<UploadResponse, Status>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type UploadStream =
        Pin<Box<dyn futures::Stream<Item = Result<UploadResponse, Status>> + Send + 'static>>;

    async fn upload(
        &self,
        request: Request<Streaming<UploadRequest>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let peer = request.remote_addr();
        let caller = self.auth.caller(request.metadata()).await?;
        if let Some(c) = &caller
            && c.role == Role::Reader
        {
            return Err(Status::permission_denied(format!(
                "token {:?} of lab {:?} is a read-only (reader) token and cannot upload; a daemon \
                 needs a daemon token: `cyclerhub token issue --lab LAB --name NAME` without \
                 --reader",
                c.name, c.lab
            )));
        }
        let recheck = caller.as_ref().map(|_| {
            Recheck::new(
                self.auth.clone(),
                request.metadata().clone(),
                self.token_recheck,
            )
        });
        // A hub that does not require tokens still learns a daemon's lab from a valid daemon
        // token it presents, as from its hub.lab (an invalid one changes nothing there).
        let presented_lab = match &caller {
            Some(_) => None,
            None => match self.auth.presented(request.metadata()).await {
                Ok(Some(c)) if c.role == Role::Daemon => Some(c.lab),
                _ => None,
            },
        };
        let lab = caller.map(|c| c.lab);
        let share_origin = share_origin(request.metadata())?;
        let Ok(stream_permit) = self.streams.clone().try_acquire_owned() else {
            tracing::warn!(
                ?peer,
                "refused an upload stream: {} already open",
                self.max_streams
            );
            return Err(Status::resource_exhausted(format!(
                "the hub serves {} upload streams at once and all are taken; retry later \
                 (`cyclerhub serve --max-upload-streams N` serves more)",
                self.max_streams
            )));
        };
        let inbound = request.into_inner();
        // Small: acks are cumulative, so a slow reader only delays them, never loses any.
        let (tx, rx) = mpsc::channel(64);
        let session = Session {
            store: self.store.clone(),
            stop: self.stop.clone(),
            presence: self.presence.clone(),
            applied: self.applied.clone(),
            lab,
            presented_lab,
            share_origin,
            recheck,
            tx,
            in_flight: self.in_flight.clone(),
            in_flight_total: self.in_flight_total,
            metrics: self.metrics.clone(),
            _stream_permit: stream_permit,
        };
        // Answer headers at once and do the work in a task, so a client may open the stream
        // before it has anything to send.
        tokio::spawn(async move {
            session.run(inbound, peer).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One Upload stream.
struct Session {
    /// The hub database.
    store: HubStore,
    /// Server shutdown flag.
    stop: watch::Receiver<bool>,
    /// Which daemons have a stream open.
    presence: crate::alerts::Presence,
    /// Bumped after each applied batch.
    applied: std::sync::Arc<watch::Sender<u64>>,
    /// The lab of the stream's token, when the hub requires tokens.
    lab: Option<String>,
    /// On a hub that does not, the lab of the daemon token the stream presented anyway: taken
    /// as the daemon's claim when its Hello names none.
    presented_lab: Option<String>,
    /// Where the stream comes from when another hub shares tests over it (`cyclerhub share`):
    /// recorded with its Hello as the provenance of its tests.
    share_origin: Option<ShareOrigin>,
    /// The stream's token, checked again now and then: a revoked token ends a stream that is
    /// already open (a daemon's lives for days) within [`ServeOptions::token_recheck`].
    recheck: Option<Recheck>,
    /// Responses to the daemon.
    tx: ResponseTx,
    /// Room for entries being applied, shared by every stream, and all of it (a batch larger
    /// than all of it takes all of it).
    in_flight: Arc<Semaphore>,
    in_flight_total: usize,
    /// Counts what is stored, for `/metrics`.
    metrics: crate::metrics::HubMetrics,
    /// This stream's place among those served at once, given back when it ends.
    _stream_permit: OwnedSemaphorePermit,
}

/// How the stream ended after the current batch: everything after it is not applied.
enum End {
    /// The daemon closed its side or went away.
    Closed,
    /// The daemon broke the protocol; tell it why.
    Refused(Status),
    /// The stream failed under the daemon (its connection, most likely): the status goes back
    /// in case it still listens, so the stream never looks like it ended cleanly.
    Failed(Status),
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<UploadRequest>,
        peer: Option<std::net::SocketAddr>,
    ) {
        let hello = tokio::select! {
            biased;
            _ = stopped(&mut self.stop) => {
                let _ = self.tx.send(Err(shutting_down())).await;
                return;
            }
            first = inbound.next() => match first {
                Some(Ok(UploadRequest { msg: Some(upload_request::Msg::Hello(hello)) })) => hello,
                Some(Ok(_)) => {
                    let _ = self.tx.send(Err(Status::invalid_argument(
                        "the first message of an Upload stream must be Hello{daemon_id, \
                         store_epoch}; got something else",
                    ))).await;
                    return;
                }
                // Undecodable, too large, or the connection failed: the daemon hears why
                // (ending the response stream instead would tell it OK).
                Some(Err(status)) => {
                    tracing::debug!(?peer, %status, "upload stream failed before Hello");
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
                None => return,
            },
        };
        if hello.daemon_id.trim().is_empty() {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument("Hello.daemon_id is empty")))
                .await;
            return;
        }
        // PostgreSQL text cannot hold NUL, and an id should not either.
        if hello.daemon_id.contains('\0') || hello.daemon_name.contains('\0') {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(
                    "Hello.daemon_id and Hello.daemon_name must not contain NUL characters",
                )))
                .await;
            return;
        }

        // The credential first: nothing of a Hello that is not the daemon's is recorded.
        if let Err(status) = self.claim(&hello).await {
            tracing::warn!(?peer, daemon_id = hello.daemon_id, "{}", status.message());
            let _ = self.tx.send(Err(status)).await;
            return;
        }
        if let Err(status) = self.bind(&hello).await {
            tracing::warn!(?peer, daemon_id = hello.daemon_id, "{}", status.message());
            let _ = self.tx.send(Err(status)).await;
            return;
        }
        let applied_up_to = match self.hello(hello.clone()).await {
            Ok(a) => a,
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                return;
            }
        };
        tracing::info!(
            ?peer,
            daemon_id = hello.daemon_id,
            store_epoch = hello.store_epoch,
            name = hello.daemon_name,
            applied_up_to,
            "daemon connected"
        );
        if !self
            .send(upload_response::Msg::Resume(ResumePoint { applied_up_to }))
            .await
        {
            return;
        }
        let _connected = self.presence.connected(&hello.daemon_id);

        let end = self.entries(&hello, &mut inbound).await;
        match end {
            End::Closed => tracing::info!(daemon_id = hello.daemon_id, "daemon disconnected"),
            End::Refused(status) => {
                tracing::warn!(daemon_id = hello.daemon_id, %status, "upload stream ended by the hub");
                let _ = self.tx.send(Err(status)).await;
            }
            End::Failed(status) => {
                tracing::debug!(daemon_id = hello.daemon_id, %status, "upload stream failed");
                let _ = self.tx.send(Err(status)).await;
            }
        }
    }

    /// Receives, applies and acks entries until the stream ends.
    async fn entries(&mut self, hello: &Hello, inbound: &mut Streaming<UploadRequest>) -> End {
        let mut last_id: Option<u64> = None;
        loop {
            // Wait for one message (or shutdown), then take what else is ready right now.
            let due = async {
                match &self.recheck {
                    Some(r) => r.due().await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                biased;
                _ = stopped(&mut self.stop) => return End::Refused(shutting_down()),
                m = inbound.next() => m,
                () = due => {
                    // An idle stream's token is checked too.
                    if let Some(r) = &mut self.recheck
                        && let Err(status) = r.still_valid().await
                    {
                        return End::Refused(status);
                    }
                    continue;
                }
            };
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let mut end = None;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match check(item, &mut last_id) {
                    Ok(entry) => {
                        bytes += entry.encoded_len();
                        batch.push(entry);
                    }
                    Err(e) => {
                        end = Some(e);
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH_ENTRIES || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                // `next()` on a Stream is cancel safe: a message not ready now stays queued.
                next = inbound.next().now_or_never();
            }

            if let Some(r) = &mut self.recheck
                && let Err(status) = r.still_valid().await
            {
                return End::Refused(status);
            }
            if !batch.is_empty() {
                // Waits while other streams' batches fill the hub's room for entries.
                let Ok(_room) = self
                    .in_flight
                    .acquire_many(
                        u32::try_from(kib(bytes).min(self.in_flight_total)).unwrap_or(u32::MAX),
                    )
                    .await
                else {
                    return End::Refused(shutting_down());
                };
                match self.apply(hello, batch).await {
                    Ok(mut outcome) => {
                        let refused = outcome.refused.take();
                        if !self.respond(outcome).await {
                            return End::Closed;
                        }
                        if let Some(why) = refused {
                            return End::Refused(Status::failed_precondition(why));
                        }
                    }
                    Err(status) => return End::Refused(status),
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Binds the daemon to its lab: the token's, or on a hub without tokens the lab its Hello
    /// names (or the daemon token it presents). Only a daemon the hub has no test of yet is
    /// bound this way: an earlier one is assigned by a person (`cyclerhub assign`), never
    /// claimed. Refused when it belongs to another lab, or names another lab than its token's;
    /// on a hub without tokens a daemon that cannot be bound still uploads, unbound.
    async fn bind(&self, hello: &Hello) -> Result<(), Status> {
        let daemon_id = &hello.daemon_id;
        let named = hello.lab.as_str();
        if !named.is_empty() {
            crate::token::check_name("Hello.lab (the daemon's hub.lab)", named)
                .map_err(Status::invalid_argument)?;
        }
        let token_lab = self.lab.as_ref().or(self.presented_lab.as_ref());
        if let Some(token_lab) = token_lab
            && !named.is_empty()
            && named != token_lab
        {
            return Err(Status::permission_denied(format!(
                "daemon {daemon_id} is configured for lab {named:?} (hub.lab) but its token is \
                 of lab {token_lab:?}; fix one of them"
            )));
        }
        let lab = match token_lab {
            Some(lab) => lab.clone(),
            None if named.is_empty() => return Ok(()),
            None => named.to_owned(),
        };
        let store = self.store.clone();
        let (id, want) = (daemon_id.clone(), lab.clone());
        let bound = tokio::task::spawn_blocking(move || store.bind_daemon(&id, &want))
            .await
            .map_err(|e| Status::internal(format!("hub storage task failed: {e}")))?
            .map_err(|e| Status::internal(format!("hub storage failed: {}", error_chain(&e))))?;
        let required = self.lab.is_some();
        match bound {
            Some(bound) if bound == lab => Ok(()),
            Some(bound) if required => Err(Status::permission_denied(format!(
                "daemon {daemon_id} belongs to lab {bound:?}; it cannot write as lab {lab:?}"
            ))),
            None if required => Err(Status::permission_denied(format!(
                "daemon {daemon_id} uploaded tests before it had a lab, so its token cannot claim \
                 them; a hub admin assigns it: `cyclerhub assign --db DB --daemon {daemon_id} \
                 --lab {lab}`"
            ))),
            // A hub without tokens takes anyone's data; it only does not move it between labs.
            other => {
                tracing::warn!(
                    daemon_id,
                    lab,
                    bound = ?other,
                    "the daemon names a lab it is not bound to; uploading unchanged (`cyclerhub \
                     assign` sets its lab)"
                );
                Ok(())
            }
        }
    }

    /// Checks the Hello's daemon credential ([`HubStore::claim_daemon`]).
    async fn claim(&self, hello: &Hello) -> Result<(), Status> {
        let store = self.store.clone();
        let hello = hello.clone();
        match tokio::task::spawn_blocking(move || store.claim_daemon(&hello)).await {
            Err(e) => Err(Status::internal(format!("hub storage task failed: {e}"))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(StoreError::Refused(why))) => Err(Status::permission_denied(why)),
            Ok(Err(e)) => Err(Status::unavailable(format!(
                "hub storage failed, retry later: {}",
                error_chain(&e)
            ))),
        }
    }

    async fn hello(&self, hello: Hello) -> Result<u64, Status> {
        let store = self.store.clone();
        let origin = self.share_origin.clone();
        tokio::task::spawn_blocking(move || {
            let applied = store.hello(&hello)?;
            if let Some(origin) = &origin {
                store.record_share_origin(&hello.daemon_id, origin)?;
            }
            Ok::<_, StoreError>(applied)
        })
        .await
        .map_err(|e| Status::internal(format!("hub storage task failed: {e}")))?
        .map_err(|e| Status::internal(format!("hub storage failed: {}", error_chain(&e))))
    }

    async fn apply(&self, hello: &Hello, batch: Vec<Entry>) -> Result<BatchOutcome, Status> {
        let store = self.store.clone();
        let daemon_id = hello.daemon_id.clone();
        let epoch = hello.store_epoch;
        let started = std::time::Instant::now();
        let outcome =
            tokio::task::spawn_blocking(move || store.apply_batch(&daemon_id, epoch, &batch))
                .await
                .map_err(|e| Status::internal(format!("hub storage task failed: {e}")))?
                .map_err(|e| {
                    let e = error_chain(&e);
                    tracing::error!(error = e, "applying a batch failed; nothing of it was kept");
                    Status::unavailable(format!("hub storage failed, retry later: {e}"))
                })?;
        self.applied.send_modify(|n| *n += 1);
        self.metrics.batch(&outcome, started.elapsed());
        Ok(outcome)
    }

    /// Sends the batch's rejections, then its cumulative ack; `false` when the daemon is gone.
    async fn respond(&self, outcome: BatchOutcome) -> bool {
        for rejection in outcome.rejections {
            if !self.send(upload_response::Msg::Rejection(rejection)).await {
                return false;
            }
        }
        // Nothing handled (an entry jumped ahead at once): nothing to acknowledge.
        if outcome.up_to == 0 {
            return true;
        }
        self.send(upload_response::Msg::Ack(Ack {
            up_to: outcome.up_to,
        }))
        .await
    }

    async fn send(&self, msg: upload_response::Msg) -> bool {
        self.tx
            .send(Ok(UploadResponse { msg: Some(msg) }))
            .await
            .is_ok()
    }
}

/// Turns one stream item into an entry, or says how the stream ends.
fn check(
    item: Option<Result<UploadRequest, Status>>,
    last_id: &mut Option<u64>,
) -> Result<Entry, End> {
    let entry = match item {
        None => return Err(End::Closed),
        // A message the hub cannot decode (too large, not protobuf): the daemon hears why.
        Some(Err(status))
            if matches!(
                status.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
            ) =>
        {
            return Err(End::Refused(status));
        }
        Some(Err(status)) => return Err(End::Failed(status)),
        Some(Ok(UploadRequest {
            msg: Some(upload_request::Msg::Entry(entry)),
        })) => entry,
        Some(Ok(UploadRequest {
            msg: Some(upload_request::Msg::Hello(_)),
        })) => {
            return Err(End::Refused(Status::invalid_argument(
                "Hello may only be the first message of an Upload stream",
            )));
        }
        Some(Ok(UploadRequest { msg: None })) => {
            return Err(End::Refused(Status::invalid_argument(
                "UploadRequest without a message",
            )));
        }
    };
    if let Some(prev) = *last_id
        && entry.id <= prev
    {
        return Err(End::Refused(Status::invalid_argument(format!(
            "entry ids must be strictly increasing in a stream: {} after {prev}",
            entry.id
        ))));
    }
    if i64::try_from(entry.id).is_err() {
        return Err(End::Refused(Status::invalid_argument(format!(
            "entry id {} is out of range (max 2^63-1)",
            entry.id
        ))));
    }
    *last_id = Some(entry.id);
    Ok(entry)
}

/// The origin a share stream declares (`cyclerd-share-bin`, JSON), if it declares one.
fn share_origin(metadata: &tonic::metadata::MetadataMap) -> Result<Option<ShareOrigin>, Status> {
    let Some(value) = metadata.get_bin(crate::share::send::ORIGIN_HEADER) else {
        return Ok(None);
    };
    let bad = |why: String| {
        Status::invalid_argument(format!(
            "the {} metadata is not a share's origin: {why}",
            crate::share::send::ORIGIN_HEADER
        ))
    };
    let bytes = value.to_bytes().map_err(|e| bad(e.to_string()))?;
    let origin: ShareOrigin = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let fields = [&origin.hub, &origin.share, &origin.selection];
    if fields.iter().any(|f| f.contains('\0') || f.len() > 4096) {
        return Err(bad(
            "a field holds a NUL character or is over 4096 bytes".into()
        ));
    }
    Ok(Some(origin))
}

/// Resolves once the server is shutting down (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn shutting_down() -> Status {
    Status::unavailable("the hub is shutting down; reconnect later")
}
