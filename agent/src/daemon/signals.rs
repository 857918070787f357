//! Stop signals: SIGTERM and SIGINT, fanned out to every loop, so each one
//! drains its pass in flight.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::DaemonError;

/// One receiver per loop; each gets the name of every stop signal.
pub struct StopSignals {
    pub ca: mpsc::Receiver<&'static str>,
    pub kubelet: mpsc::Receiver<&'static str>,
}

/// Installs the handlers and starts the task that fans signals out.
pub fn listen() -> Result<StopSignals, DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| DaemonError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| DaemonError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let (ca_tx, ca) = mpsc::channel::<&'static str>(4);
    let (kubelet_tx, kubelet) = mpsc::channel::<&'static str>(4);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            let _ = kubelet_tx.send(name).await;
            if ca_tx.send(name).await.is_err() {
                return;
            }
        }
    });
    Ok(StopSignals { ca, kubelet })
}
