//! cyclerd's gRPC contracts, compiled at build time with protox (no system `protoc`).
//!
//! # Layout
//! - [`ingest`]: `cyclerd.ingest.v1.Ingest/Upload`, the stream from a daemon's outbox to the hub.
//! - [`control`]: `cyclerd.daemon.v1.Control`, the daemon's API for `cyclerctl` and lab tools.
//! - [`hub`]: `cyclerd.hub.v1.Query`, the hub's API for finding, reading and following tests.
//! - [`metadata`]: what a test's metadata map means: its tiers, and their validation against
//!   the JSON Schemas a lab registers in its hub (shared by the daemon and the hub).
//! - [`chunk`]: many samples of one test encoded column by column into one compact blob, for
//!   the hub's storage and the daemon's outbox.
//! - [`cycles`]: what a cycle's numbers mean (throughput, efficiency, retention, resistance),
//!   from a test's samples, for the daemon that computes them and the hub that serves them.
//! - [`files`]: data files created private (the outbox, the hub's database), for both peers.
//! - [`incoming`]: the accept loop both servers use: accept errors back off, silent connections
//!   are closed, connections open at once are capped; and the open-file limit raised at start.
//! - [`token`]: bearer tokens as text (format, generation, hashed secrets), for both peers.
//! - [`grpc`]: gRPC health and reflection as both peers serve them: every service a port
//!   serves, and only those, in reflection v1 and v1alpha.
//! - [`logs`]: the log both binaries write (plain text, JSON, journald levels).
//! - [`DAEMON_DESCRIPTOR_SET`], [`HUB_DESCRIPTOR_SET`]: each port's descriptors, for gRPC
//!   reflection.

/// `cyclerd.ingest.v1`: the hub's ingest stream.
// Generated code: an Entry is large next to a Hello, and boxing it would cost an allocation per
// entry on the hot path for no gain.
#[allow(clippy::large_enum_variant)]
pub mod ingest {
    tonic::include_proto!("cyclerd.ingest.v1");
}

/// `cyclerd.daemon.v1`: the daemon's control API.
#[allow(clippy::large_enum_variant)]
pub mod control {
    tonic::include_proto!("cyclerd.daemon.v1");
}

/// `cyclerd.hub.v1`: the hub's query API.
pub mod hub {
    tonic::include_proto!("cyclerd.hub.v1");
}

pub mod chunk;
pub mod cycles;
/// Samples like those of `cyclerd demo`, for the peers' benchmarks and tests.
#[cfg(any(test, feature = "demo-data"))]
pub mod demo_data;
pub mod files;
pub mod grpc;
pub mod incoming;
pub mod logs;
pub mod metadata;
pub mod token;

/// The `authorization` header value that carries a token (the hub's or the control API's) (`Bearer <token>`); `None` when
/// the token has characters a header cannot carry.
pub fn bearer(token: &str) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {}", token.trim()).parse().ok()
}

/// Whether a hub `address` is plain `http://` to another machine: a token sent there crosses
/// the network readable by anyone on the way (worth a warning; `https://` is the cure).
pub fn in_clear_to_another_host(address: &str) -> bool {
    let Some(rest) = address.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    !(host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()))
}

/// Encoded `FileDescriptorSet` of the daemon's control API (`cyclerd.daemon.v1`), for its
/// port's gRPC reflection.
pub const DAEMON_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/daemon_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the hub's APIs (`cyclerd.ingest.v1` and `cyclerd.hub.v1`), for
/// its port's gRPC reflection.
pub const HUB_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hub_descriptor.bin"));

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_http_to_another_machine_is_in_clear() {
        for (address, clear) in [
            ("http://hub.lab:50051", true),
            ("http://192.0.2.7:50051/", true),
            ("http://127.0.0.1:50051", false),
            ("http://localhost:50051", false),
            ("http://[::1]:50051", false),
            ("https://hub.lab:50051", false),
        ] {
            assert_eq!(super::in_clear_to_another_host(address), clear, "{address}");
        }
    }
}
