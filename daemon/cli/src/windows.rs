//! `cyclerd service run`: the daemon as a Windows service (docs/windows.md shows how to build
//! and register it). The Service Control Manager starts the process; its stop (and a system
//! shutdown) goes to the daemon's own stop, so outputs go off and the outbox is flushed as at a
//! SIGTERM on unix. Nothing else differs from `cyclerd run`.

use clap::Subcommand;
use cyclerd_drivers::Clock;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

/// The name the service is registered under (`sc create cyclerd ...`).
const NAME: &str = "cyclerd";

/// What the SCM may ask of `cyclerd service`.
#[derive(Subcommand)]
pub enum ServiceAction {
    /// Run under the Service Control Manager (its binPath); not for a console.
    Run {
        /// The lab configuration (TOML).
        #[arg(long, default_value = crate::run::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// The configuration, handed from the command line to the SCM's callback.
static CONFIG: OnceLock<PathBuf> = OnceLock::new();

/// Hands the process to the Service Control Manager; returns when the service stopped.
pub fn run(action: ServiceAction) -> anyhow::Result<()> {
    let ServiceAction::Run { config } = action;
    let _ = CONFIG.set(config);
    service_dispatcher::start(NAME, ffi_service_main)
        .map_err(|e| anyhow::anyhow!("not started by the Service Control Manager: {e}"))
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!("cyclerd service: {e:#}");
    }
}

fn serve() -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            if let Some(tx) = stop_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = service_control_handler::register(NAME, handler)?;
    let report = |state, accepted, exit_code| {
        status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accepted,
            exit_code: ServiceExitCode::Win32(exit_code),
            checkpoint: 0,
            // Outputs off and the outbox flushed take this long at most.
            wait_hint: Duration::from_secs(30),
            process_id: None,
        })
    };
    report(ServiceState::StartPending, ServiceControlAccept::STOP, 0)?;
    let path = CONFIG
        .get()
        .cloned()
        .unwrap_or_else(|| crate::run::DEFAULT_CONFIG.into());
    let open_files = cyclerd::proto::incoming::raise_open_file_limit();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(crate::run::run(
        &path,
        Clock::scaled(1.0),
        open_files,
        async {
            let _ = stop_rx.await;
        },
        || {
            let accepted = ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN;
            let _ = report(ServiceState::Running, accepted, 0);
        },
    ));
    // 1064: ERROR_EXCEPTION_IN_SERVICE, the SCM's "the service failed" (its recovery acts on it).
    let exit_code = if result.is_ok() { 0 } else { 1064 };
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
    )?;
    result
}
