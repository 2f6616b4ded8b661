//! Compiles the .proto contracts with protox (a pure-Rust protobuf compiler), so building needs
//! no system `protoc`.

const INGEST: &str = "proto/cyclerd/ingest/v1/ingest.proto";
const CONTROL: &str = "proto/cyclerd/daemon/v1/control.proto";
const QUERY: &str = "proto/cyclerd/hub/v1/query.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // One descriptor set per port, for its reflection: the daemon's control API, and the hub's
    // ingest and query APIs (a port lists only what it serves).
    for (name, files) in [("daemon", &[CONTROL][..]), ("hub", &[INGEST, QUERY][..])] {
        let set = protox::compile(files, ["proto"])?;
        std::fs::write(
            out.join(format!("{name}_descriptor.bin")),
            prost::Message::encode_to_vec(&set),
        )?;
    }
    tonic_prost_build::configure().compile_fds(protox::compile([INGEST, CONTROL], ["proto"])?)?;
    // The hub's query API streams ingest batches: generated against the ingest module rather
    // than a second copy of its types, so only the query file itself is generated here.
    let mut query = protox::compile([QUERY], ["proto"])?;
    query.file.retain(|f| f.package() == "cyclerd.hub.v1");
    tonic_prost_build::configure()
        .extern_path(".cyclerd.ingest.v1", "crate::ingest")
        .compile_fds(query)?;
    for f in [INGEST, CONTROL, QUERY] {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
