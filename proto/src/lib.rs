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
//! - [`time`]: UTC calendar dates from days since the epoch and back, and RFC 3339 times.
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
pub mod quality;
pub mod time;
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

/// Why a connection to a hub or a daemon at `address` failed, in words that say what to check:
/// refused (nothing listens there), a name that does not resolve, TLS (the CA or the
/// certificate's names), no answer; else the innermost error's own words. `error` is the
/// transport's error, its causes chained by `source()`.
pub fn connect_failure(address: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut refused = false;
    let mut timed_out = false;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        chain.push(e.to_string());
        next = e.source();
    }
    let innermost = chain.last().cloned().unwrap_or_default();
    let text = chain.join(": ").to_ascii_lowercase();
    let host = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    if refused || text.contains("connection refused") {
        format!("connection refused: nothing listens at {host} (is it running, on that port?)")
    } else if text.contains("dns error")
        || text.contains("lookup address")
        || text.contains("name or service not known")
        || text.contains("nodename nor servname")
        || text.contains("no such host")
    {
        format!("the name in {host} does not resolve ({innermost}); check the host name")
    } else if text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
        || text.contains("invalid peer")
    {
        format!(
            "TLS failed ({innermost}): is the CA file the one that signed its certificate, and is \
             the host name one the certificate names?"
        )
    } else if timed_out || text.contains("timed out") || text.contains("elapsed") {
        format!("no answer from {host} in time (a firewall, or the wrong address?)")
    } else {
        innermost
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_connect_is_said_by_its_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let said = super::connect_failure("http://127.0.0.1:9", &refused);
        assert!(said.starts_with("connection refused"), "{said}");
        assert!(said.contains("127.0.0.1:9"), "{said}");
        let name = std::io::Error::other("dns error: failed to lookup address information");
        let said = super::connect_failure("http://hub.invalid:50051", &name);
        assert!(said.contains("does not resolve"), "{said}");
        let tls = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let said = super::connect_failure("https://hub.lab:50051", &tls);
        assert!(
            said.starts_with("TLS failed") && said.contains("UnknownIssuer"),
            "{said}"
        );
    }

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
