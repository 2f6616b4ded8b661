//! The uploader: streams the outbox to the hub.
//!
//! Hello with (daemon_id, store_epoch) -> the hub's resume point -> entries pipelined from there,
//! at most `window` in flight -> cumulative acks delete entries locally; rejections park them in
//! the dead-letter table without stopping the stream. The Hello carries the store's secret, to
//! which the hub binds the daemon id at the first upload. Any error ends the session; the next one
//! starts after a jittered exponential backoff, forever.
//!
//! With several hub addresses (hub processes on one PostgreSQL database) a session that fails to
//! connect or breaks moves to the next address; the backoff grows only once every address has
//! failed in a row. The hello's resume point comes from the database, so the stream resumes
//! exactly wherever it lands.

use crate::outbox::{Outbox, OutboxReader, PageItem};
use crate::proto::ingest::{
    Hello, UploadRequest, ingest_client::IngestClient, upload_request, upload_response,
};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the hub may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence from the hub while entries are in flight before the stream counts as dead
/// (HTTP/2 keepalive catches a dead peer; this catches a hub that is alive but stuck).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the status API shows about the uplink.
#[derive(Debug, Default)]
pub struct UploaderStatus {
    pub connected: AtomicBool,
    pub last_error: Mutex<String>,
}

/// Uploader settings.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// The hub's addresses, tried in order (at least one).
    pub hub_addresses: Vec<String>,
    /// PEM of the CA the hub's certificate must chain to (https:// addresses).
    pub hub_ca_pem: Option<Vec<u8>>,
    /// The daemon's hub token (`cyclerhub token issue`), sent as a bearer token with every
    /// stream; `None` for a hub that does not ask for one.
    pub hub_token: Option<String>,
    pub daemon_name: String,
    /// The lab the daemon is configured for (`hub.lab`), said in the Hello.
    pub hub_lab: Option<String>,
    /// Entries in flight before waiting for acks.
    pub window: usize,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach the hub: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the hub refused the stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Protocol(String),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// Runs until `shutdown` turns true.
pub async fn run(
    config: UploaderConfig,
    outbox: Outbox,
    status: Arc<UploaderStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let reader = match outbox.reader() {
        Ok(r) => Arc::new(Mutex::new(r)),
        Err(e) => {
            tracing::error!("uploader cannot open the outbox for reading: {e}");
            return;
        }
    };
    let addresses = config.hub_addresses.len().max(1);
    let mut backoff = BACKOFF_MIN;
    // The address the next session uses, and how many sessions in a row ended without an ack.
    let mut current = 0;
    let mut fruitless = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let address = config.hub_addresses.get(current).map_or("", String::as_str);
        let result = tokio::select! {
            r = session(address, &config, &outbox, &reader, &status) => r,
            _ = shutdown.changed() => return,
        };
        status.connected.store(false, Ordering::Release);
        let progressed = match result {
            Ok(progressed) => progressed,
            Err(e) => {
                tracing::warn!(address, "upload session ended: {e}");
                *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    format!("{address}: {e}");
                false
            }
        };
        if progressed {
            backoff = BACKOFF_MIN;
            fruitless = 0;
        } else {
            fruitless += 1;
        }
        // The next hub process; a single hub is simply tried again.
        current = (current + 1) % addresses;
        // Full jitter: a lab's daemons do not reconnect in lockstep after a hub restart.
        let wait = rand::rng().random_range(backoff / 2..=backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if fruitless >= addresses {
            // Every address failed since the last ack: back off before the next round.
            backoff = (backoff * 2).min(BACKOFF_MAX);
            fruitless = 0;
        }
    }
}

/// The hub at `address`, over TLS checked against `ca_pem` when given, with keepalives and the
/// large HTTP/2 windows that let a backlog drain at full speed.
pub fn hub_endpoint(
    address: &str,
    ca_pem: Option<&[u8]>,
) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(address.to_string())?;
    if let Some(ca) = ca_pem {
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .tcp_nodelay(true))
}

async fn connect(
    address: &str,
    ca_pem: Option<&[u8]>,
) -> Result<IngestClient<Channel>, SessionError> {
    let channel = hub_endpoint(address, ca_pem)?.connect().await?;
    Ok(IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// One stream; returns Ok(true) if it got any ack before ending.
async fn session(
    address: &str,
    config: &UploaderConfig,
    outbox: &Outbox,
    reader: &Arc<Mutex<OutboxReader>>,
    status: &UploaderStatus,
) -> Result<bool, SessionError> {
    let mut client = connect(address, config.hub_ca_pem.as_deref()).await?;
    let (tx, rx) = mpsc::channel::<UploadRequest>(config.window + 1);
    let identity = outbox.identity();
    let hello = UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: identity.daemon_id.clone(),
            store_epoch: identity.epoch,
            daemon_name: config.daemon_name.clone(),
            lab: config.hub_lab.clone().unwrap_or_default(),
            daemon_secret: identity.secret.expose().to_owned(),
        })),
    };
    tx.send(hello)
        .await
        .map_err(|_| SessionError::Protocol("stream closed before hello".into()))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &config.hub_token {
        let value = crate::proto::bearer(token).ok_or_else(|| {
            SessionError::Protocol("the hub token has characters a header cannot carry".into())
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut responses = client.upload(request).await?.into_inner();
    let resume = match tokio::time::timeout(HELLO_TIMEOUT, responses.message()).await {
        Err(_) => {
            return Err(SessionError::Protocol(
                "the hub did not answer the hello".into(),
            ));
        }
        Ok(reply) => match reply?.and_then(|r| r.msg) {
            Some(upload_response::Msg::Resume(r)) => r.applied_up_to,
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected a resume point after hello, got {other:?}"
                )));
            }
        },
    };
    status.connected.store(true, Ordering::Release);
    let stats = Arc::clone(outbox.stats());
    if resume > stats.committed.load(Ordering::Acquire) {
        // The hub holds entries this store never committed (the store was restored from a
        // backup or lost its tail): new entries would reuse those ids and be taken for
        // duplicates. A new epoch starts a fresh history at the hub.
        let identity = outbox.new_epoch().await?;
        return Err(SessionError::Protocol(format!(
            "the hub has applied up to entry {resume}, beyond this store's last entry; \
             continuing under a new store epoch {}",
            identity.epoch
        )));
    }
    let local_acked = stats.acked.load(Ordering::Acquire);
    if resume > local_acked {
        // The hub applied entries whose acks we never saw (a cut during the last session).
        outbox.ack(resume)?;
    } else if resume < local_acked {
        tracing::warn!(
            "the hub's resume point {resume} is behind our acknowledged {local_acked}: the hub \
             lost data it had acknowledged; entries up to {local_acked} are no longer here to resend"
        );
    }
    let mut sent = resume.max(local_acked);
    // The last id the hub has of this store: an entry after a gap (entries parked here as
    // unreadable, or acknowledged ones the hub lost) says how many it skipped, or the hub
    // refuses it as jumping ahead.
    let mut hub_has = resume;
    let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(config.window);
    let mut committed = outbox.committed();
    let mut progressed = false;
    let mut last_reply = tokio::time::Instant::now();
    loop {
        // Fill the window.
        while in_flight.len() < config.window && sent < *committed.borrow_and_update() {
            let room = config.window - in_flight.len();
            let reader = Arc::clone(reader);
            let page = tokio::task::spawn_blocking(move || {
                reader
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .page_after(sent, room)
            })
            .await
            .map_err(|e| SessionError::Protocol(format!("outbox reader panicked: {e}")))??;
            if page.is_empty() {
                break;
            }
            for item in page {
                match item {
                    PageItem::Entry(stored) => {
                        let mut entry = stored.entry;
                        let id = entry.id;
                        entry.skipped_before = id.saturating_sub(hub_has + 1);
                        hub_has = id;
                        let msg = UploadRequest {
                            msg: Some(upload_request::Msg::Entry(entry)),
                        };
                        if tx.send(msg).await.is_err() {
                            return Err(SessionError::Protocol("the hub closed the stream".into()));
                        }
                        if in_flight.is_empty() {
                            // The ack clock starts with the first entry in flight.
                            last_reply = tokio::time::Instant::now();
                        }
                        in_flight.push_back(id);
                        sent = id;
                    }
                    PageItem::Corrupt { id, reason } => {
                        tracing::error!("outbox entry {id} parked: {reason}");
                        outbox.park(id, reason)?;
                        sent = id;
                    }
                }
            }
        }
        let window_open = in_flight.len() < config.window;
        let ack_deadline = async {
            if in_flight.is_empty() {
                std::future::pending().await
            } else {
                tokio::time::sleep_until(last_reply + ACK_TIMEOUT).await
            }
        };
        tokio::select! {
            _ = ack_deadline => {
                return Err(SessionError::Protocol(format!(
                    "no acknowledgement from the hub for {ACK_TIMEOUT:?} with {} entries in flight",
                    in_flight.len()
                )));
            }
            reply = responses.message() => {
                last_reply = tokio::time::Instant::now();
                match reply?.and_then(|r| r.msg) {
                    Some(upload_response::Msg::Ack(ack)) => {
                        outbox.ack(ack.up_to)?;
                        while in_flight.front().is_some_and(|&id| id <= ack.up_to) {
                            in_flight.pop_front();
                        }
                        progressed = true;
                    }
                    Some(upload_response::Msg::Rejection(r)) => {
                        tracing::error!("the hub rejected entry {}: {}", r.entry_id, r.reason);
                        outbox.park(r.entry_id, r.reason)?;
                    }
                    Some(upload_response::Msg::Resume(_)) => {
                        return Err(SessionError::Protocol("unexpected second resume point".into()));
                    }
                    None => return Ok(progressed),
                }
            }
            changed = committed.changed(), if window_open => {
                if changed.is_err() {
                    return Ok(progressed);
                }
            }
        }
    }
}
