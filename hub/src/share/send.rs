//! Runs the hub's shares while it serves: one task follows the shares table and the store's
//! commits (filling the continuous shares' logs), and one task per share streams its log to
//! the receiving hub, reconnecting with backoff when it is down.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use cyclerd_proto::incoming::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use cyclerd_proto::ingest::ingest_client::IngestClient;
use cyclerd_proto::ingest::{Hello, UploadRequest, upload_request, upload_response};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::entries::Materialiser;
use crate::store::{HubStore, ShareOrigin, ShareRow, error_chain};

/// How often the shares table is read again, so that a share added or removed by `cyclerhub
/// share` (another process) takes effect: a tiny read.
pub const RESCAN: Duration = Duration::from_secs(1);
/// Least time between two fills: a hub committing many batches a second fills at this pace,
/// not once per batch (a fill lists the tests).
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(200);
/// Entries sent ahead of the receiver's acks.
const WINDOW: u64 = 256;
/// Bytes of entries sent ahead of the receiver's acks (an entry of samples is up to ~400 KiB).
const WINDOW_BYTES: usize = 16 << 20;
/// Entries read and sent at a time.
const PAGE: u64 = 64;
/// Longest wait before reconnecting to a receiver that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest message the receiving hub accepts (its `MAX_DECODING_MESSAGE_SIZE`).
const MAX_MESSAGE: usize = 64 << 20;
/// The Upload call's metadata key that says the stream is a share, and from where.
pub const ORIGIN_HEADER: &str = "cyclerd-share-bin";

/// Runs every share of `store` until `stop`: fills the continuous shares' logs when the store
/// commits (`commits`) or every [`RESCAN`], and keeps a stream per share.
pub async fn run(
    store: HubStore,
    mut commits: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    // Bumped after each fill, so that streams caught up look at their log again.
    let (logged_tx, _) = watch::channel(0u64);
    // By share name: the stream id it runs (a share removed and added again is a new one).
    let mut running: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        let started = tokio::time::Instant::now();
        let s = store.clone();
        let shares = match tokio::task::spawn_blocking(move || s.shares()).await {
            Ok(Ok(shares)) => shares,
            Ok(Err(e)) => {
                tracing::warn!(error = error_chain(&e), "cannot read the shares");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        running.retain(|name, (stream, task)| {
            let listed = shares
                .iter()
                .any(|s| &s.name == name && &s.stream_id == stream);
            if !listed {
                tracing::info!(share = name, "share removed: its stream stops");
                task.abort();
            }
            listed
        });
        for share in &shares {
            if share.state == "done" || running.contains_key(&share.name) {
                continue;
            }
            let task = tokio::spawn(stream(store.clone(), share.clone(), logged_tx.subscribe()));
            running.insert(share.name.clone(), (share.stream_id.clone(), task));
        }
        let continuous: Vec<ShareRow> = shares.into_iter().filter(|s| !s.once).collect();
        let s = store.clone();
        let filled = tokio::task::spawn_blocking(move || {
            let mut added = 0;
            for share in &continuous {
                match super::fill(&s, share) {
                    Ok(n) => added += n,
                    Err(e) => tracing::warn!(
                        share = share.name,
                        error = error_chain(&e),
                        "cannot log the share's new entries"
                    ),
                }
            }
            added
        })
        .await
        .unwrap_or(0);
        if filled > 0 {
            logged_tx.send_modify(|n| *n += filled);
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(started + MIN_FILL_INTERVAL) => {}
        }
        let commits_gone = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = commits.changed() => changed.is_err(),
            () = tokio::time::sleep(RESCAN) => false,
        };
        // Nobody bumps it any more: the rescan alone goes on.
        if commits_gone {
            tokio::time::sleep(RESCAN).await;
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// Streams `share` until it is done (a `--once` share whose log is all acknowledged), or
/// forever, reconnecting after failures.
async fn stream(store: HubStore, share: ShareRow, mut logged: watch::Receiver<u64>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    let mut acked = share.acked;
    loop {
        let began = tokio::time::Instant::now();
        let outcome = session(&store, &share, &mut logged, &mut acked).await;
        // A stream that ran a while failed afresh: retry soon, not after the last backoff.
        if began.elapsed() > MAX_BACKOFF * 2 {
            backoff = FIRST_BACKOFF;
        }
        match outcome {
            Ok(()) => {
                tracing::info!(
                    share = share.name,
                    "share done: everything it selected is acknowledged"
                );
                record(&store, &share.name, acked, "done", None).await;
                return;
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(
                    share = share.name,
                    target = share.target,
                    error = why,
                    "share stream failed; retrying"
                );
                record(&store, &share.name, acked, "retrying", Some(why)).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Records how far a share got.
async fn record(store: &HubStore, name: &str, acked: u64, state: &str, error: Option<String>) {
    let (s, name, state) = (store.clone(), name.to_owned(), state.to_owned());
    let done = tokio::task::spawn_blocking(move || {
        s.set_share_state(&name, acked, &state, error.as_deref())
    })
    .await;
    if let Ok(Err(e)) = done {
        tracing::warn!(error = error_chain(&e), "cannot record a share's state");
    }
}

/// One connection: Hello, the resume point, then the log from there while acks come back.
/// `Ok` only when a `--once` share is wholly acknowledged.
async fn session(
    store: &HubStore,
    share: &ShareRow,
    logged: &mut watch::Receiver<u64>,
    acked: &mut u64,
) -> Result<()> {
    let pseudonymiser = match &share.salt_file {
        Some(salt) => Some(crate::cli::pseudonymiser_from(Path::new(salt))?),
        None => None,
    };
    let selection: super::Selection = serde_json::from_str(&share.selection)
        .with_context(|| format!("the stored selection of share {:?}", share.name))?;
    let origin = ShareOrigin {
        hub: share.origin.clone(),
        share: share.name.clone(),
        anonymised: pseudonymiser.is_some(),
        selection: selection.describe(pseudonymiser.as_ref()),
    };
    let channel = connect(share).await?;
    let (tx, rx) = mpsc::channel::<UploadRequest>(WINDOW as usize + 1);
    tx.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: share.stream_id.clone(),
            store_epoch: share.epoch,
            daemon_name: format!("{} (share {})", share.origin, share.name),
            lab: String::new(),
            daemon_secret: share.stream_secret.clone(),
        })),
    })
    .await
    .map_err(|_| anyhow!("the stream closed before Hello"))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(file) = &share.token_file {
        let bearer = crate::remote::read_token(Path::new(file))?;
        request.metadata_mut().insert("authorization", bearer);
    }
    request.metadata_mut().insert_bin(
        ORIGIN_HEADER,
        MetadataValue::from_bytes(&serde_json::to_vec(&origin)?),
    );
    let mut responses = IngestClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE)
        .upload(request)
        .await
        .map_err(|s| anyhow!("{}: {}", share.target, s.message()))?
        .into_inner();
    let resume = match responses.message().await {
        Ok(Some(r)) => match r.msg {
            Some(upload_response::Msg::Resume(r)) => r.applied_up_to,
            other => bail!("the receiver answered Hello with {other:?}, not a resume point"),
        },
        Ok(None) => bail!("the receiver ended the stream at Hello"),
        Err(s) => bail!("the receiver refused the share: {}", s.message()),
    };
    *acked = resume;
    tracing::info!(
        share = share.name,
        target = share.target,
        resume,
        "share streaming"
    );
    record(store, &share.name, *acked, "streaming", None).await;
    let mut sent = resume;
    // The entries sent and not acknowledged yet, `(id, encoded bytes)`, and their bytes.
    let mut ahead: VecDeque<(u64, usize)> = VecDeque::new();
    let mut ahead_bytes = 0usize;
    let mut recorded = *acked;
    let mut materialiser = Some(Materialiser::new(store.clone(), pseudonymiser));
    // For a `--once` share: the end of its log, fixed when it was added.
    let end = share.once.then_some(share.logged);
    let mut last_record = std::time::Instant::now();
    loop {
        if end.is_some_and(|end| *acked >= end) {
            return Ok(());
        }
        // All sent is acknowledged: `share list` shows it, however recently it recorded.
        if sent == *acked && recorded != *acked {
            recorded = *acked;
            last_record = std::time::Instant::now();
            record(store, &share.name, *acked, "streaming", None).await;
        }
        // Send what the window allows.
        let mut caught_up = false;
        let room = WINDOW.saturating_sub(ahead.len() as u64).min(PAGE);
        if room > 0 && ahead_bytes < WINDOW_BYTES {
            let (s, name) = (store.clone(), share.name.clone());
            let mut m = materialiser.take().expect("put back after every page");
            let (m, page) = tokio::task::spawn_blocking(move || {
                let page = s.share_log(&name, sent, room).and_then(|page| {
                    page.iter()
                        .map(|l| m.entry(l))
                        .collect::<Result<Vec<_>, _>>()
                });
                (m, page)
            })
            .await?;
            materialiser = Some(m);
            let page =
                page.map_err(|e| anyhow!("reading the share's data: {}", error_chain(&e)))?;
            caught_up = page.is_empty();
            for entry in page {
                sent = entry.id;
                let bytes = entry.encoded_len();
                ahead.push_back((entry.id, bytes));
                ahead_bytes += bytes;
                tx.send(UploadRequest {
                    msg: Some(upload_request::Msg::Entry(entry)),
                })
                .await
                .map_err(|_| anyhow!("the receiver closed the stream"))?;
            }
        }
        let full = ahead.len() as u64 >= WINDOW || ahead_bytes >= WINDOW_BYTES;
        tokio::select! {
            m = responses.message() => match m {
                Ok(Some(r)) => match r.msg {
                    Some(upload_response::Msg::Ack(a)) => {
                        *acked = a.up_to.max(*acked);
                        while ahead.front().is_some_and(|(id, _)| *id <= *acked) {
                            if let Some((_, bytes)) = ahead.pop_front() {
                                ahead_bytes -= bytes;
                            }
                        }
                        if last_record.elapsed() >= RESCAN {
                            recorded = *acked;
                            last_record = std::time::Instant::now();
                            record(store, &share.name, *acked, "streaming", None).await;
                        }
                    }
                    Some(upload_response::Msg::Rejection(r)) => {
                        tracing::warn!(
                            share = share.name,
                            entry = r.entry_id,
                            reason = r.reason,
                            "the receiver rejected a shared entry"
                        );
                    }
                    _ => bail!("the receiver sent a second resume point"),
                },
                Ok(None) => bail!("the receiver ended the stream"),
                Err(s) => bail!("the receiver ended the stream: {}", s.message()),
            },
            _ = logged.changed(), if caught_up && !full => {}
            // More to send and room for it: go round at once.
            () = std::future::ready(()), if !caught_up && !full => {}
        }
    }
}

/// A channel to the receiving hub: TLS checked against the share's CA for `https://`.
async fn connect(share: &ShareRow) -> Result<Channel> {
    let url = &share.target;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("{url} is not a URL"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let ca = share
            .ca_file
            .as_deref()
            .ok_or_else(|| anyhow!("{url} needs the receiving hub's CA (share add --ca-file)"))?;
        let pem = std::fs::read(ca).with_context(|| format!("cannot read the CA file {ca}"))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .with_context(|| format!("the CA file {ca} is unusable"))?;
    }
    endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach {url}: {}",
            cyclerd_proto::connect_failure(url, &e)
        )
    })
}
