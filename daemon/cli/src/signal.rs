//! The signals that stop a command: Ctrl-C, and SIGTERM on unix (systemd's stop).

/// Ctrl-C, or SIGTERM on unix, listened for from the moment this is made (the default action
/// would otherwise kill the process before the cleanup that follows the wait).
pub struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub fn new() -> anyhow::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let cannot = |e| anyhow::anyhow!("cannot listen for Ctrl-C and SIGTERM: {e}");
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt()).map_err(cannot)?,
                terminate: signal(SignalKind::terminate()).map_err(cannot)?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    pub async fn wait(self) {
        #[cfg(unix)]
        {
            let StopSignal {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
