//! End-to-end and fault-injection tests across crates: simulated devices on real sockets, the
//! daemon (in process, or as a child process that gets killed), the outbox, real gRPC, the hub.
//! One test binary; one module per concern.

#[path = "all/chamber.rs"]
mod chamber;
#[path = "all/cycles.rs"]
mod cycles;
#[path = "all/e2e.rs"]
mod e2e;
#[cfg(unix)]
#[path = "all/faults.rs"]
mod faults;
#[path = "all/harness.rs"]
mod harness;
#[path = "all/hub_web.rs"]
mod hub_web;
#[cfg(unix)]
#[path = "all/hubs.rs"]
mod hubs;
#[path = "all/identity.rs"]
mod identity;
#[path = "all/lab_schemas.rs"]
mod lab_schemas;
#[path = "all/layout.rs"]
mod layout;
#[path = "all/logs.rs"]
mod logs;
#[path = "all/native.rs"]
mod native;
#[path = "all/outputs.rs"]
mod outputs;
#[path = "all/params.rs"]
mod params;
#[path = "all/quality.rs"]
mod quality;
#[cfg(target_os = "linux")]
#[path = "all/resources.rs"]
mod resources;
#[cfg(unix)]
#[path = "all/restart.rs"]
mod restart;
#[cfg(unix)]
#[path = "all/service.rs"]
mod service;
#[path = "all/steps.rs"]
mod steps;
#[path = "all/supervised.rs"]
mod supervised;
#[path = "all/tls.rs"]
mod tls;
#[path = "all/web.rs"]
mod web;
