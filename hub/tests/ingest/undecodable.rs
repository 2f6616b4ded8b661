//! Upload streams carrying bytes the hub cannot decode (garbage, a message past the size
//! limit) end with the decoding error's status, whether before Hello or after: never with OK,
//! which a daemon would take for a clean end.

use super::*;
use prost::Message as _;
use prost::bytes::BufMut as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends each request as the raw bytes given, and reads the hub's responses as usual.
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = UploadResponse;
    type Encoder = Raw;
    type Decoder = Responses;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Responses {
        Responses
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct Responses;

impl Decoder for Responses {
    type Item = UploadResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<UploadResponse>, tonic::Status> {
        UploadResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// Opens an Upload stream, sends `frames` as raw messages (keeping the request side open), and
/// returns the status the stream ends with; fails the test if it ends with OK.
async fn ends_with(hub: &Hub, frames: Vec<Vec<u8>>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(hub.channel().await);
    grpc.ready().await.expect("channel ready");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let mut responses = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static("/cyclerd.ingest.v1.Ingest/Upload"),
            Raw,
        )
        .await
        .expect("upload call")
        .into_inner();
    for frame in frames {
        tx.send(frame).await.expect("request stream open");
    }
    loop {
        match tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("hub answers in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended with OK, not with the error that ended it"),
            Err(status) => return status,
        }
    }
}

fn hello() -> Vec<u8> {
    UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: "daemon-a".into(),
            store_epoch: 1,
            daemon_name: String::new(),
            lab: String::new(),
            daemon_secret: secret_of("daemon-a"),
        })),
    }
    .encode_to_vec()
}

/// Not protobuf: a field with wire type 7, which does not exist.
const GARBAGE: [u8; 8] = [0xff; 8];

#[tokio::test]
async fn garbage_instead_of_hello_ends_the_stream_with_the_decoding_error_not_ok() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let status = ends_with(&hub, vec![GARBAGE.to_vec()]).await;
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_first_message_past_the_size_limit_ends_the_stream_with_out_of_range_not_ok() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let too_large = vec![0u8; cyclerhub::server::MAX_DECODING_MESSAGE_SIZE + 1];
    let status = ends_with(&hub, vec![too_large]).await;
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn garbage_after_hello_ends_the_stream_with_the_decoding_error() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let status = ends_with(&hub, vec![hello(), GARBAGE.to_vec()]).await;
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    hub.shutdown().await;
}
