//! The Control gRPC service (`cyclerd.daemon.v1.Control`), with gRPC health and reflection.
//!
//! Every call passes the [`access::Access`] check first (the token its role needs, on a
//! listener that requires tokens); [`tokens`] keeps the tokens. TLS, when configured, wraps
//! the whole listener. Health and reflection stay open: they say nothing about the lab.

pub mod access;
pub(crate) mod coalesce;
pub mod tokens;

use crate::channel::StartError;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::proto::control::control_server::{Control, ControlServer};
use crate::proto::control::*;
use access::Access;
use cyclerd_proto::incoming::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, Limits, incoming};
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokens::{Role, TokenStore};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status as GrpcStatus};

/// Shortest gap between two of one channel's snapshots on a Watch: a change goes out at once
/// unless the last went out less than this ago (50 a second at most per channel).
const WATCH_GAP: Duration = Duration::from_millis(20);

/// A long Watch checks its token again once this has passed, so a revocation ends it.
const RECHECK_PERIOD: Duration = Duration::from_secs(1);

/// How the control API serves: TLS or not, tokens required or not, and its connection limits.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// The daemon's certificate and key; `None`: plain HTTP/2.
    pub tls: Option<tonic::transport::Identity>,
    /// Which calls need which token; `None`: every call allowed (a loopback listener).
    pub access: Option<Access>,
    /// Connections open at once, and how long a new one may stay silent (see
    /// [`cyclerd_proto::incoming`]), so a crowd of idle clients cannot take the port.
    pub limits: Limits,
}

impl ServeOptions {
    /// As `config` (read from `origin`) says: TLS from `[control] tls_cert`/`tls_key`, tokens
    /// from `[control] tokens_file` when [`Config::control_requires_tokens`].
    pub fn from_config(config: &Config, origin: &str) -> anyhow::Result<ServeOptions> {
        let read = |path: &std::path::Path, key: &str| {
            std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "{origin}: control.{key} = {}: cannot read it: {e}",
                    path.display()
                )
            })
        };
        let c = &config.control;
        let tls = match (&c.tls_cert, &c.tls_key) {
            (Some(cert), Some(key)) => Some(tonic::transport::Identity::from_pem(
                read(cert, "tls_cert")?,
                read(key, "tls_key")?,
            )),
            _ => None,
        };
        let access = config
            .control_requires_tokens()
            .then(|| Access::with_tokens(TokenStore::new(config.control_tokens_file())));
        Ok(ServeOptions {
            tls,
            access,
            limits: Limits::default(),
        })
    }
}

/// Serves the control API on `listener`, open and without TLS (a loopback listener), until
/// `shutdown` completes.
pub async fn serve(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(daemon, listener, ServeOptions::default(), shutdown).await
}

/// Serves the control API on `listener` as `options` say until `shutdown` completes.
pub async fn serve_with(
    daemon: Daemon,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Health and reflection for this port's one service; reflection describes the control API
    // only (the hub's contract is the hub's to describe).
    let conventions = cyclerd_proto::grpc::conventions(
        cyclerd_proto::DAEMON_DESCRIPTOR_SET,
        &[<ControlServer<ControlService> as tonic::server::NamedService>::NAME],
    )
    .await
    .map_err(|e| {
        tracing::error!("reflection service: {e}");
        e
    })
    .ok();
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = options.tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let access = options.access.unwrap_or_else(Access::open);
    let router = builder
        // A client that stops answering (its machine gone) is dropped, with its Watch streams.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_optional_service(conventions.as_ref().map(|c| c.health.clone()))
        .add_optional_service(conventions.as_ref().map(|c| c.reflection_v1.clone()))
        .add_optional_service(conventions.map(|c| c.reflection_v1alpha))
        .add_service(ControlServer::new(ControlService { daemon, access }));
    router
        .serve_with_incoming_shutdown(incoming(listener, options.limits), shutdown)
        .await
}

/// The service; all state lives in the daemon handle.
pub struct ControlService {
    daemon: Daemon,
    /// Who may call what.
    access: Access,
}

fn to_status(e: StartError) -> GrpcStatus {
    match e {
        StartError::NoSuchChannel(_) => GrpcStatus::not_found(e.to_string()),
        StartError::Busy { .. } | StartError::NotRunning(_) | StartError::Chamber(_) => {
            GrpcStatus::failed_precondition(e.to_string())
        }
        StartError::Protocol(_) | StartError::MissingMetadata(_) | StartError::Metadata(_) => {
            GrpcStatus::invalid_argument(e.to_string())
        }
        StartError::ChannelGone(_) | StartError::Device(_) => {
            GrpcStatus::unavailable(e.to_string())
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<ChannelSnapshot, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<Status>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Reader, "GetStatus")?;
        Ok(Response::new(self.daemon.status()))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Reader, "ListChannels")?;
        Ok(Response::new(ListChannelsResponse {
            channels: self.daemon.snapshots(),
        }))
    }

    async fn get_channel(
        &self,
        request: Request<GetChannelRequest>,
    ) -> Result<Response<ChannelSnapshot>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Reader, "GetChannel")?;
        let id = request.into_inner().channel_id;
        self.daemon
            .snapshot(&id)
            .map(Response::new)
            .ok_or_else(|| to_status(StartError::NoSuchChannel(id)))
    }

    async fn start_test(
        &self,
        request: Request<StartTestRequest>,
    ) -> Result<Response<StartTestResponse>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Operator, "StartTest")?;
        let r = request.into_inner();
        let params = r.params.into_iter().collect();
        let started = self
            .daemon
            .start_test_with(
                &r.channel_id,
                &r.protocol_yaml,
                "protocol",
                r.metadata,
                &params,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(StartTestResponse {
            test_id: started.test_id,
            notes: started.notes,
        }))
    }

    async fn stop_test(
        &self,
        request: Request<StopTestRequest>,
    ) -> Result<Response<StopTestResponse>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Operator, "StopTest")?;
        let r = request.into_inner();
        self.daemon
            .stop_test(&r.channel_id, &r.reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(StopTestResponse {}))
    }

    async fn get_outbox(
        &self,
        request: Request<GetOutboxRequest>,
    ) -> Result<Response<OutboxStatus>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Reader, "GetOutbox")?;
        self.daemon
            .outbox_status()
            .await
            .map(Response::new)
            .map_err(|e| GrpcStatus::internal(format!("{e:#}")))
    }

    async fn retry_dead_letters(
        &self,
        request: Request<RetryDeadLettersRequest>,
    ) -> Result<Response<RetryDeadLettersResponse>, GrpcStatus> {
        self.access
            .check(request.metadata(), Role::Operator, "RetryDeadLetters")?;
        let requeued = self
            .daemon
            .outbox()
            .requeue_dead_letters()
            .await
            .map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
        Ok(Response::new(RetryDeadLettersResponse { requeued }))
    }

    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, GrpcStatus> {
        let caller = self
            .access
            .check(request.metadata(), Role::Reader, "Watch")?;
        // Each channel's stream starts with its current snapshot and then yields each change at
        // once, coalesced to one per WATCH_GAP, so a slow client never builds a backlog.
        let streams = self.daemon.watchers().into_iter().map(|rx| {
            Box::pin(coalesce::coalesced(rx, WATCH_GAP).map(Ok))
                as Pin<Box<dyn Stream<Item = Result<ChannelSnapshot, GrpcStatus>> + Send>>
        });
        let all = futures::stream::select_all(streams);
        if caller.is_none() {
            return Ok(Response::new(Box::pin(all)));
        }
        // The token is checked again before a snapshot once RECHECK_PERIOD has passed: a
        // revoked token's Watch ends with the refusal.
        let (access, metadata) = (self.access.clone(), request.metadata().clone());
        let mut checked = tokio::time::Instant::now();
        let mut ended = false;
        let rechecked = futures::StreamExt::scan(all, (), move |(), item| {
            let item = if ended {
                None
            } else if checked.elapsed() < RECHECK_PERIOD {
                Some(item)
            } else {
                checked = tokio::time::Instant::now();
                match access.check(&metadata, Role::Reader, "Watch") {
                    Ok(_) => Some(item),
                    Err(refused) => {
                        ended = true;
                        Some(Err(refused))
                    }
                }
            };
            futures::future::ready(item)
        });
        Ok(Response::new(Box::pin(rechecked)))
    }
}
