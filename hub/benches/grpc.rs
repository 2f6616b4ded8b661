//! gRPC -> hub: a daemon's upload stream (Hello, then entries pipelined, as its uploader sends
//! them from the outbox) into `cyclerhub::server` on loopback, timed from the first entry sent
//! to the Ack that covers the last.

use std::time::Instant;

use cyclerd_proto::ingest::ingest_client::IngestClient;
use cyclerd_proto::ingest::{Entry, Hello, UploadRequest, upload_request, upload_response};
use cyclerhub::HubStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Samples/s of uploading `entries` (a registration, then sample batches) as daemon
/// `daemon_id` to a hub serving `store`.
pub fn upload(store: &HubStore, daemon_id: &str, entries: Vec<Entry>, samples: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cyclerhub::server::run(listener, store.clone(), async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let mut responses = IngestClient::new(channel)
            .upload(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let hello = Hello {
            daemon_id: daemon_id.into(),
            daemon_secret: format!("bench-credential-of-{daemon_id}-0123456789abcdef"),
            store_epoch: 1,
            daemon_name: daemon_id.into(),
            lab: String::new(),
        };
        let request = |msg| UploadRequest { msg: Some(msg) };
        tx.send(request(upload_request::Msg::Hello(hello)))
            .await
            .unwrap();
        match responses.message().await.unwrap().and_then(|r| r.msg) {
            Some(upload_response::Msg::Resume(_)) => {}
            other => panic!("expected a ResumePoint, got {other:?}"),
        }
        let last = entries.last().unwrap().id;
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for e in entries {
                tx.send(request(upload_request::Msg::Entry(e)))
                    .await
                    .unwrap();
            }
            tx
        });
        loop {
            match responses.message().await.unwrap().and_then(|r| r.msg) {
                Some(upload_response::Msg::Ack(a)) if a.up_to >= last => break,
                Some(upload_response::Msg::Ack(_)) => {}
                other => panic!("expected Acks, got {other:?}"),
            }
        }
        let rate = samples as f64 / start.elapsed().as_secs_f64();
        drop(sender.await.unwrap());
        drop(responses);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        rate
    })
}
