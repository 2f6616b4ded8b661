//! The Control gRPC service (`cyclerd.daemon.v1.Control`), with gRPC health and reflection.

use crate::channel::StartError;
use crate::daemon::Daemon;
use crate::proto::control::control_server::{Control, ControlServer};
use crate::proto::control::*;
use cyclerd_proto::incoming::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, Limits, incoming};
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status as GrpcStatus};

/// Fastest rate at which Watch sends one channel's snapshots.
const WATCH_PERIOD: Duration = Duration::from_millis(100);

/// Serves the control API on `listener` until `shutdown` completes, with the default
/// connection [`Limits`].
pub async fn serve(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(daemon, listener, Limits::default(), shutdown).await
}

/// [`serve`] within `limits`: connections open at once, and how long a new one may stay silent
/// (see [`cyclerd_proto::incoming`]), so a crowd of idle clients cannot take the port.
pub async fn serve_with(
    daemon: Daemon,
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ControlServer<ControlService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            tracing::error!("reflection service: {e}");
            e
        })
        .ok();
    let router = tonic::transport::Server::builder()
        // A client that stops answering (its machine gone) is dropped, with its Watch streams.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(ControlServer::new(ControlService { daemon }));
    router
        .serve_with_incoming_shutdown(incoming(listener, limits), shutdown)
        .await
}

/// The service; all state lives in the daemon handle.
pub struct ControlService {
    daemon: Daemon,
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
        _: Request<GetStatusRequest>,
    ) -> Result<Response<Status>, GrpcStatus> {
        Ok(Response::new(self.daemon.status()))
    }

    async fn list_channels(
        &self,
        _: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, GrpcStatus> {
        Ok(Response::new(ListChannelsResponse {
            channels: self.daemon.snapshots(),
        }))
    }

    async fn get_channel(
        &self,
        request: Request<GetChannelRequest>,
    ) -> Result<Response<ChannelSnapshot>, GrpcStatus> {
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
        let r = request.into_inner();
        self.daemon
            .stop_test(&r.channel_id, &r.reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(StopTestResponse {}))
    }

    async fn get_outbox(
        &self,
        _: Request<GetOutboxRequest>,
    ) -> Result<Response<OutboxStatus>, GrpcStatus> {
        self.daemon
            .outbox_status()
            .await
            .map(Response::new)
            .map_err(|e| GrpcStatus::internal(format!("{e:#}")))
    }

    async fn retry_dead_letters(
        &self,
        _: Request<RetryDeadLettersRequest>,
    ) -> Result<Response<RetryDeadLettersResponse>, GrpcStatus> {
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
        _: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, GrpcStatus> {
        // Each channel's stream starts with its current snapshot and then yields the latest one
        // at most every WATCH_PERIOD, so a slow client never builds a backlog.
        let streams = self.daemon.watchers().into_iter().map(|rx| {
            Box::pin(WatchStream::new(rx).throttle(WATCH_PERIOD).map(Ok))
                as Pin<Box<dyn Stream<Item = Result<ChannelSnapshot, GrpcStatus>> + Send>>
        });
        Ok(Response::new(Box::pin(futures::stream::select_all(
            streams,
        ))))
    }
}
